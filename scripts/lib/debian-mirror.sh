# Sourced by the image scripts (ensure-postgres-image.sh, build-image.sh).
# debian_mirror: the first URI serving $SUITE in the machine's apt sources.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri="$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0; enabled = 1; deb = 0
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    if (line ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", line); uris = line }
                    if (line ~ /^Suites:/)  { n = split(substr(line, 8), s, /[ \t]+/); for (j = 1; j <= n; j++) if (s[j] == suite) ok = 1 }
                    if (line ~ /^Types:/ && line ~ /(^|[ \t])deb([ \t]|$)/) deb = 1
                    if (line ~ /^Enabled:[ \t]*no/) enabled = 0
                }
                if (ok && deb && enabled && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f")"
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri="$(awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")"
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    echo "http://deb.debian.org/debian"
}
