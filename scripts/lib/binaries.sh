# Sourced by the scripts that run the real programs (python-client-tests.sh,
# browser-tests.sh, contract-tests.sh).
#
# release_binaries: builds the release rmm-server and rmm-agent and sets BIN_DIR to the
# folder holding them. RMM_BIN_DIR=<folder> uses the programs there instead, unbuilt (a debug
# build while working on a test: RMM_BIN_DIR=target/debug).
release_binaries() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
        export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
    fi
    if [ -n "${RMM_BIN_DIR:-}" ]; then
        BIN_DIR="$(cd "$RMM_BIN_DIR" && pwd)"
        echo "using the programs in $BIN_DIR (RMM_BIN_DIR)"
        return
    fi
    echo "building the release binaries"
    cargo build --release --locked -p rmm-server -p rmm-agent
    BIN_DIR="$(pwd)/target/release"
}
