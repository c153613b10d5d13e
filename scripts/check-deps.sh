#!/usr/bin/env bash
# Dependency rule check (clean architecture):
#   * rmm-domain may depend only on the crates in DOMAIN_ALLOW (normal deps,
#     transitively, for the host target);
#   * rmm-application must not depend, even transitively, on any crate in
#     APPLICATION_DENY (I/O, web, DB, serialisation, crypto frameworks).
set -euo pipefail

# Crates allowed in rmm-domain's normal dependency tree.
DOMAIN_ALLOW=(
    rmm-domain
    thiserror thiserror-impl
    uuid
    proc-macro2 quote syn unicode-ident
    # uuid's v4 feature -> getrandom, which on Linux needs cfg-if and libc.
    getrandom cfg-if libc
)

# Crates forbidden anywhere in rmm-application's normal dependency tree.
APPLICATION_DENY=(
    sqlx poem poem-openapi tokio-tungstenite tungstenite hyper reqwest
    mio socket2 rustls serde_json jsonwebtoken argon2
)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

# Unique crate names in the normal-dependency tree of package $1.
crate_names() {
    local out
    out="$(cargo tree --locked -p "$1" -e normal --prefix none)" \
        || { echo "check-deps: 'cargo tree -p $1' failed" >&2; exit 1; }
    awk 'NF { print $1 }' <<<"$out" | sort -u
}

in_list() {
    local needle="$1"; shift
    local x
    for x in "$@"; do [ "$x" = "$needle" ] && return 0; done
    return 1
}

status=0

echo "check-deps: rmm-domain may only depend on: ${DOMAIN_ALLOW[*]}"
mapfile -t domain_crates < <(crate_names rmm-domain)
offenders=()
for c in "${domain_crates[@]}"; do
    in_list "$c" "${DOMAIN_ALLOW[@]}" || offenders+=("$c")
done
echo "check-deps:   rmm-domain tree (${#domain_crates[@]} crates): ${domain_crates[*]}"
if [ "${#offenders[@]}" -gt 0 ]; then
    echo "check-deps: FAIL: rmm-domain depends on crates outside its allow-list: ${offenders[*]}" >&2
    echo "check-deps:   (see: cargo tree -p rmm-domain -e normal -i <crate>)" >&2
    status=1
else
    echo "check-deps:   ok"
fi

echo "check-deps: rmm-application must not depend on: ${APPLICATION_DENY[*]}"
mapfile -t app_crates < <(crate_names rmm-application)
offenders=()
for c in "${app_crates[@]}"; do
    in_list "$c" "${APPLICATION_DENY[@]}" && offenders+=("$c")
done
echo "check-deps:   rmm-application tree: ${#app_crates[@]} crates"
if [ "${#offenders[@]}" -gt 0 ]; then
    echo "check-deps: FAIL: rmm-application depends on forbidden crates: ${offenders[*]}" >&2
    echo "check-deps:   (see: cargo tree -p rmm-application -e normal -i <crate>)" >&2
    status=1
else
    echo "check-deps:   ok"
fi

exit "$status"
