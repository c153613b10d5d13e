#!/usr/bin/env bash
# Refreshes the console's vendored front-end files in assets/vendor/ from the npm registry:
# pinned versions, fetched with `npm pack`, checked against pinned SHA-256 sums, and only the
# prebuilt dist files (plus each package's LICENSE) copied. The result is committed, so a build
# needs neither npm nor the network; run this only to change a version (then update its sum).
#
#   adapters/web/vendor.sh
set -euo pipefail

# name@version  sha256-of-the-tarball
PACKAGES=(
    "@xterm/xterm@6.0.0 908e66e04af6c8dc6b00dd3b54de088e2e81e5ed866284fd6c2fb3c2d1c7a3f6"
    "@xterm/addon-fit@0.11.0 26003b4517a132b64e4ff228fd88a5fda3fff5e606c76093f6dcff772e9ecec0"
    "asciinema-player@3.18.0 18d9703510fae9209da9e26ce3d13c59f083b4abcff003a3bba958e03918a862"
)

# package  file-in-the-tarball  destination-under-assets/vendor
FILES=(
    "@xterm/xterm package/lib/xterm.js xterm/xterm.js"
    "@xterm/xterm package/css/xterm.css xterm/xterm.css"
    "@xterm/xterm package/LICENSE xterm/LICENSE"
    "@xterm/addon-fit package/lib/addon-fit.js xterm/addon-fit.js"
    "@xterm/addon-fit package/LICENSE xterm/LICENSE-addon-fit"
    "asciinema-player package/dist/bundle/asciinema-player.min.js asciinema-player/asciinema-player.min.js"
    "asciinema-player package/dist/bundle/asciinema-player.css asciinema-player/asciinema-player.css"
    "asciinema-player package/LICENSE asciinema-player/LICENSE"
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/assets/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

declare -A unpacked
for entry in "${PACKAGES[@]}"; do
    read -r spec sum <<<"$entry"
    name="${spec%@*}"
    tarball="$(cd "$work" && npm pack --silent "$spec" | tail -n 1)"
    actual="$(sha256sum "$work/$tarball" | cut -d' ' -f1)"
    if [ "$actual" != "$sum" ]; then
        echo "vendor.sh: $spec: SHA-256 $actual, expected $sum; refusing it" >&2
        exit 1
    fi
    dir="$work/unpacked/${name//\//_}"
    mkdir -p "$dir"
    tar -xzf "$work/$tarball" -C "$dir"
    unpacked[$name]="$dir"
    echo "vendor.sh: $spec ok ($sum)"
done

rm -rf "$dest"
for entry in "${FILES[@]}"; do
    read -r name from to <<<"$entry"
    mkdir -p "$(dirname "$dest/$to")"
    cp "${unpacked[$name]}/$from" "$dest/$to"
done
{
    echo "Vendored by adapters/web/vendor.sh; do not edit. Versions:"
    for entry in "${PACKAGES[@]}"; do echo "  $entry"; done
} >"$dest/VERSIONS"
echo "vendor.sh: wrote $dest"
