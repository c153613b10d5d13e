#!/usr/bin/env bash
# The architecture's rules, checked in CI:
#   1. Dependencies point inward, and each program links only what it needs
#      (`cargo tree -e normal`, transitively, for the host target):
#        * rmm-domain may depend only on the crates in DOMAIN_ALLOW;
#        * rmm-application must not depend on any crate in APPLICATION_DENY;
#        * rmm-agent (installed on every managed machine) on none in AGENT_DENY;
#        * rmm (the technicians' CLI) on none in CLI_DENY.
#   2. The wire contract is defined once, in rmm-protocol (adapters/protocol; the file-error
#      codes are the domain's FileErrorCode, domain/src/file.rs, which rmm-protocol re-exports
#      and (de)serialises, so the use cases can name them too):
#        * no other source file defines a constant named like one of its limits;
#        * no other source file spells a file-error code or an API error code as a
#          string literal (they are matched as the types FileErrorCode/ApiErrorCode,
#          never by text), outside tests.
#
#   scripts/check-deps.sh              check the workspace
#   scripts/check-deps.sh --self-test  show that each rule fails on a deliberate violation
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
    # /metrics: recorded in the adapters, rendered by rmm-server.
    metrics metrics-exporter-prometheus
)

# The agent runs on customers' machines: no server or technician-side crates.
AGENT_DENY=(sqlx sqlx-core poem poem-openapi argon2 jsonwebtoken reqwest rmm-store rmm-http rmm-auth rmm-gateway rmm-application rmm-web rust-embed metrics metrics-exporter-prometheus)

# The CLI talks to the API: no database, no server framework, no password hashing.
CLI_DENY=(sqlx sqlx-core poem poem-openapi argon2 rmm-store rmm-http rmm-auth rmm-gateway rmm-web rust-embed metrics metrics-exporter-prometheus)

PROTOCOL_DIR=adapters/protocol
# "file:word" pairs where a word spelled like an API error code names something else: an audit
# action that shares its name with the refusal it is not (enrollment_revoked: an admin revoked
# a token; the error code: a machine presented a revoked one).
NOT_A_CODE=("application/src/ports/audit.rs:enrollment_revoked")
FILE_CODES=domain/src/file.rs

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

# allow_only NAME ALLOWED... <<< crate list: fails listing crates outside ALLOWED.
allow_only() {
    local name="$1"; shift
    local offenders=() c
    while read -r c; do
        [ -n "$c" ] || continue
        in_list "$c" "$@" || offenders+=("$c")
    done
    if [ "${#offenders[@]}" -gt 0 ]; then
        echo "check-deps: FAIL: $name depends on crates outside its allow-list: ${offenders[*]}" >&2
        echo "check-deps:   (see: cargo tree -p $name -e normal -i <crate>)" >&2
        return 1
    fi
    echo "check-deps:   $name ok"
}

# deny NAME DENIED... <<< crate list: fails listing crates in DENIED.
deny() {
    local name="$1"; shift
    local offenders=() c
    while read -r c; do
        [ -n "$c" ] || continue
        in_list "$c" "$@" && offenders+=("$c")
    done
    if [ "${#offenders[@]}" -gt 0 ]; then
        echo "check-deps: FAIL: $name depends on forbidden crates: ${offenders[*]}" >&2
        echo "check-deps:   (see: cargo tree -p $name -e normal -i <crate>)" >&2
        return 1
    fi
    echo "check-deps:   $name ok"
}

# The names of rmm-protocol's limits (pub const NAME in limits.rs).
protocol_limits() {
    sed -n 's/^pub const \([A-Z_][A-Z0-9_]*\):.*/\1/p' "$1/$PROTOCOL_DIR/src/limits.rs"
}

# The wire names of the error codes, from their definitions in rmm-protocol.
protocol_codes() {
    {
        sed -n 's/.*Self::[A-Za-z]* => "\([a-z_]*\)",.*/\1/p' "$1/$FILE_CODES"
        sed -n 's/^    [A-Za-z]* = "\([a-z_]*\)":$/\1/p' "$1/$PROTOCOL_DIR/src/api.rs"
    } | sort -u
}

# Non-test Rust sources outside rmm-protocol, under root $1: the files that must not
# redefine the wire contract. Test code (tests/ folders, tests.rs files, benches) may spell
# wire values to check them.
contract_users() {
    (cd "$1" && find domain application adapters bin -name '*.rs' \
        -not -path "$PROTOCOL_DIR/*" -not -path "$FILE_CODES" -not -path '*/tests/*' -not -name 'tests.rs' \
        -not -name '*_tests.rs' -not -path '*/target/*' 2>/dev/null) | sort
}

# Rule 2 over the tree at $1.
check_contract() {
    local root="$1" failed=0 name file code
    mapfile -t limits < <(protocol_limits "$root")
    mapfile -t codes < <(protocol_codes "$root")
    mapfile -t files < <(contract_users "$root")
    if [ "${#limits[@]}" -eq 0 ] || [ "${#codes[@]}" -lt 20 ]; then
        echo "check-deps: FAIL: cannot read the contract from $PROTOCOL_DIR (limits: ${#limits[@]}, codes: ${#codes[@]})" >&2
        return 1
    fi
    for file in "${files[@]}"; do
        # Code before an inline `#[cfg(test)]` module only.
        local src
        src="$(awk '/^#\[cfg\(test\)\]/ { exit } { print }' "$root/$file")"
        for name in "${limits[@]}"; do
            if grep -Eq "^\s*(pub(\([a-z]+\))? )?const $name\s*:" <<<"$src"; then
                echo "check-deps: FAIL: $file defines $name again; use rmm_protocol::limits::$name" >&2
                failed=1
            fi
        done
        for code in "${codes[@]}"; do
            # Only codes that are not also ordinary words of the code base (`io`, ...).
            [ "${#code}" -ge 6 ] && [[ "$code" == *_* ]] || continue
            in_list "$file:$code" "${NOT_A_CODE[@]}" && continue
            if grep -q "\"$code\"" <<<"$src"; then
                echo "check-deps: FAIL: $file spells the error code \"$code\"; match rmm_protocol::{FileErrorCode, api::ApiErrorCode} instead" >&2
                failed=1
            fi
        done
    done
    [ "$failed" -eq 0 ] && echo "check-deps:   wire contract defined once (${#limits[@]} limits, ${#codes[@]} codes, ${#files[@]} files checked)"
    return "$failed"
}

self_test() {
    local status=0 tmp
    echo "check-deps: self-test: each rule must fail on a deliberate violation"
    if printf '%s\n' rmm-agent rmm-agent-runtime tokio sqlx | deny rmm-agent "${AGENT_DENY[@]}" 2>/dev/null; then
        echo "check-deps: self-test FAIL: an agent tree with sqlx passed" >&2; status=1
    else
        echo "check-deps:   an agent tree with sqlx is refused"
    fi
    if printf '%s\n' rmm-cli reqwest argon2 | deny rmm-cli "${CLI_DENY[@]}" 2>/dev/null; then
        echo "check-deps: self-test FAIL: a CLI tree with argon2 passed" >&2; status=1
    else
        echo "check-deps:   a CLI tree with argon2 is refused"
    fi
    if printf '%s\n' rmm-domain serde | allow_only rmm-domain "${DOMAIN_ALLOW[@]}" 2>/dev/null; then
        echo "check-deps: self-test FAIL: a domain tree with serde passed" >&2; status=1
    else
        echo "check-deps:   a domain tree with serde is refused"
    fi
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    mkdir -p "$tmp/$PROTOCOL_DIR/src" "$tmp/adapters/agent/src" "$tmp/$(dirname "$FILE_CODES")"
    cp "$PROTOCOL_DIR"/src/{limits,api}.rs "$tmp/$PROTOCOL_DIR/src/"
    cp "$FILE_CODES" "$tmp/$FILE_CODES"
    printf 'pub const FILE_WINDOW: u64 = 1;\n' >"$tmp/adapters/agent/src/files.rs"
    if check_contract "$tmp" 2>/dev/null; then
        echo "check-deps: self-test FAIL: a second FILE_WINDOW passed" >&2; status=1
    else
        echo "check-deps:   a second definition of FILE_WINDOW is refused"
    fi
    printf 'fn f(code: &str) -> bool { code == "checksum_mismatch" }\n' >"$tmp/adapters/agent/src/files.rs"
    if check_contract "$tmp" 2>/dev/null; then
        echo "check-deps: self-test FAIL: matching \"checksum_mismatch\" by text passed" >&2; status=1
    else
        echo "check-deps:   matching an error code by its text is refused"
    fi
    printf 'fn f() {}\n' >"$tmp/adapters/agent/src/files.rs"
    if ! check_contract "$tmp" >/dev/null 2>&1; then
        echo "check-deps: self-test FAIL: a clean tree was refused" >&2; status=1
    fi
    return "$status"
}

if [ "${1:-}" = "--self-test" ]; then
    self_test
    exit $?
fi

status=0
echo "check-deps: rmm-domain may only depend on: ${DOMAIN_ALLOW[*]}"
crate_names rmm-domain | allow_only rmm-domain "${DOMAIN_ALLOW[@]}" || status=1
echo "check-deps: rmm-application must not depend on: ${APPLICATION_DENY[*]}"
crate_names rmm-application | deny rmm-application "${APPLICATION_DENY[@]}" || status=1
echo "check-deps: rmm-agent must not depend on: ${AGENT_DENY[*]}"
crate_names rmm-agent | deny rmm-agent "${AGENT_DENY[@]}" || status=1
echo "check-deps: rmm (rmm-cli) must not depend on: ${CLI_DENY[*]}"
crate_names rmm-cli | deny rmm-cli "${CLI_DENY[@]}" || status=1
echo "check-deps: the wire contract is defined once, in $PROTOCOL_DIR"
check_contract . || status=1
exit "$status"
