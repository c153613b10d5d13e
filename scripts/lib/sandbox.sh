# Sourced by scripts that run the real binaries against input they do not choose (the
# contract fuzzing: the commands and file paths it sends reach a real agent).
#
# sandboxed DIR CMD...: runs CMD in new network, mount and PID namespaces: loopback only (no
# route off the machine), every file system read-only except DIR, and no process outside it
# visible or signalable. Everything in it dies with it. Needs root (CI and these machines run
# as root); fails with a message when the namespaces cannot be made.
sandboxed() {
    local dir="$1"
    shift
    if ! unshare --net --mount --pid --fork --kill-child true 2>/dev/null; then
        echo "sandbox: cannot create namespaces (unshare --net --mount --pid needs root)" >&2
        return 1
    fi
    unshare --net --mount --pid --fork --kill-child --mount-proc bash -c '
        set -euo pipefail
        dir="$1"
        shift
        ip link set lo up
        mount --bind "$dir" "$dir"
        awk "{print \$2}" /proc/self/mounts | grep -vE "^/(proc|dev|sys)(/|$)" | grep -vxF "$dir" \
            | sort -u | while read -r mount_point; do
                mount -o remount,bind,ro "$mount_point" 2>/dev/null || true
            done
        # The guarantees, checked rather than assumed.
        if [ -w / ] || [ ! -w "$dir" ]; then
            echo "sandbox: the file systems are not read-only but for $dir" >&2
            exit 1
        fi
        if ip -o route show | grep -q .; then
            echo "sandbox: a route leaves the loopback" >&2
            exit 1
        fi
        export TMPDIR="$dir"
        exec "$@"
    ' sandbox "$dir" "$@"
}
