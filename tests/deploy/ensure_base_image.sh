#!/bin/sh
# tests/deploy/ensure_base_image.sh - makes sure the local Docker engine has a debian:bookworm-slim
# image, building one from scratch when it is missing (no image registry needs to be reachable).
#
#   tests/deploy/ensure_base_image.sh
#
# If `docker image inspect debian:bookworm-slim` succeeds it exits 0 at once. Otherwise it:
#   1. installs debootstrap with apt-get when missing,
#   2. finds the Debian mirror this host's apt already uses (sources.list and sources.list.d,
#      one-line and deb822 formats; read at run time, nothing is hard-coded here),
#   3. debootstraps --variant=minbase bookworm from that mirror into a mktemp directory,
#   4. writes the image's /etc/apt/sources.list so that it names the same mirror(s) as the host
#      (bookworm plus bookworm-updates / bookworm-security when the host lists them), slims the
#      tree (docs, man pages, locales, apt lists) the way the official -slim images do,
#   5. `tar -C dir -c . | docker import - debian:bookworm-slim` and removes the directory.
# Safe to re-run; the temporary directory is removed on any exit.
#
# Environment overrides (all optional):
#   TRIEKV_BASE_IMAGE       image to create           (default debian:bookworm-slim)
#   TRIEKV_DEBIAN_SUITE     Debian suite to bootstrap (default bookworm)
#   TRIEKV_DEBIAN_MIRROR    mirror URI, skips the lookup in the host's apt configuration
#   TMPDIR                  where the temporary root file system (~100 MB) is built
# Needs root (debootstrap, apt-get) and a running Docker engine.
set -eu

image=${TRIEKV_BASE_IMAGE:-debian:bookworm-slim}
suite=${TRIEKV_DEBIAN_SUITE:-bookworm}

say() { echo "ensure_base_image: $*"; }
die() { echo "ensure_base_image: error: $*" >&2; exit 1; }

if docker image inspect "$image" >/dev/null 2>&1; then
    say "$image already present"
    exit 0
fi
docker version >/dev/null 2>&1 || die "cannot talk to the Docker engine"
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, apt-get)"

# --- 1. debootstrap -------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends debootstrap >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } ||
        die "apt-get could not install debootstrap"
fi

# --- 2. the host's mirror -------------------------------------------------------------------
# Print "URI SUITE COMPONENTS..." for every enabled binary (deb) source that apt reads.
apt_sources() {
    SL="" SP=""
    eval "$(apt-config shell SL Dir::Etc::sourcelist/f SP Dir::Etc::sourceparts/d)"
    [ -n "$SL" ] && [ -n "$SP" ] || die "apt-config does not name the apt source files"
    for f in "$SL" "$SP"*.list; do
        [ -f "$f" ] || continue
        awk '{ sub(/#.*/, ""); gsub(/\[[^]]*\]/, "") }
             $1 == "deb" && NF >= 3 { out = $2; for (i = 3; i <= NF; i++) out = out " " $i; print out }' "$f"
    done
    for f in "$SP"*.sources; do
        [ -f "$f" ] || continue
        awk 'function flush(  n, m, i, j, u, s) {
                 if ((" " types " ") ~ / deb / && tolower(enabled) != "no") {
                     n = split(uris, u, " "); m = split(suites, s, " ")
                     for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j], comps
                 }
                 types = uris = suites = comps = key = ""; enabled = "yes"
             }
             BEGIN { enabled = "yes" }
             /^#/ { next }
             /^[ \t]*$/ { flush(); next }
             /^[ \t]/ { val = $0 }
             /^[^ \t]/ { c = index($0, ":"); key = tolower(substr($0, 1, c - 1)); val = substr($0, c + 1) }
             { if (key == "types") types = types " " val; else if (key == "uris") uris = uris " " val
               else if (key == "suites") suites = suites " " val; else if (key == "components") comps = comps " " val
               else if (key == "enabled") { enabled = val; gsub(/[ \t]/, "", enabled) } }
             END { flush() }' "$f"
    done | awk '{ $1 = $1; print }'
}
entries=$(apt_sources | awk '$1 ~ /^(https?|ftp|file):/ { sub(/\/+$/, "", $1); print }')

# A proxy configured for apt is also needed by debootstrap (it downloads with wget).
HP="" HSP=""
eval "$(apt-config shell HP Acquire::http::Proxy HSP Acquire::https::Proxy)"
if [ -n "$HP" ] && [ "$HP" != DIRECT ] && [ -z "${http_proxy:-}" ]; then export http_proxy="$HP"; fi
if [ -n "$HSP" ] && [ "$HSP" != DIRECT ] && [ -z "${https_proxy:-}" ]; then export https_proxy="$HSP"; fi

tmp="" child=""
cleanup() {
    if [ -n "$child" ]; then    # interrupted: stop debootstrap and everything it started
        kill -TERM "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    [ -n "$tmp" ] && [ -d "$tmp" ] || return 0
    # debootstrap mounts proc/sys (and possibly /dev) inside the target; never rm through them.
    awk -v d="$tmp/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
tmp=$(mktemp -d -t triekv-rootfs.XXXXXX)
root="$tmp/root"

if [ -n "${TRIEKV_DEBIAN_MIRROR:-}" ]; then
    mirror=${TRIEKV_DEBIAN_MIRROR%/}
else
    # Prefer sources that list the suite itself, then any other (non-security) source; keep the
    # first one that actually serves dists/$suite/Release (fetched with apt's own downloader, so
    # apt's proxy and TLS settings apply).
    candidates=$(printf '%s\n' "$entries" |
        awk -v s="$suite" '$2 == s { print 0, NR, $1 } $2 != s && $2 !~ /-security$/ { print 1, NR, $1 }' |
        sort -n -k1,1 -k2,2 | awk '!seen[$3]++ { print $3 }')
    mirror=""
    for uri in $candidates; do
        if /usr/lib/apt/apt-helper download-file "$uri/dists/$suite/Release" "$tmp/Release" >/dev/null 2>&1; then
            mirror=$uri
            break
        fi
    done
    [ -n "$mirror" ] || die "no apt source of this host serves dists/$suite (set TRIEKV_DEBIAN_MIRROR)"
fi
say "mirror for $suite: $mirror"

# --- 3. debootstrap -------------------------------------------------------------------------
say "debootstrap --variant=minbase $suite into $root (about a minute)"
start=$(date +%s)
# Run in the background in a process group of its own and wait, so that a signal to this script
# is handled at once and can stop the whole debootstrap run.
setsid -w debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 </dev/null &
child=$!
rc=0
wait "$child" || rc=$?
child=""
if [ "$rc" -ne 0 ]; then
    tail -n 20 "$tmp/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 20 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
fi
say "debootstrap done in $(($(date +%s) - start))s"

# --- 4. apt sources and slimming ------------------------------------------------------------
# Same mirror(s) as the host: the suite itself, and -updates / -security when the host has them.
comps_of() { printf '%s\n' "$entries" | awk -v s="$1" '$2 == s { $1 = $2 = ""; $0 = $0; $1 = $1; print; exit }'; }
uri_of() { printf '%s\n' "$entries" | awk -v s="$1" '$2 == s { print $1; exit }'; }
{
    main_comps=$(comps_of "$suite")
    echo "deb $mirror $suite ${main_comps:-main}"
    for s in "$suite-updates" "$suite-security"; do
        u=$(uri_of "$s")
        [ -n "$u" ] && echo "deb $u $s $(comps_of "$s")"
    done
} >"$root/etc/apt/sources.list"
rm -f "$root/etc/apt/sources.list.d/"*.list "$root/etc/apt/sources.list.d/"*.sources
say "image apt sources: $(grep -c '^deb ' "$root/etc/apt/sources.list") line(s) -> $(awk '{print $2}' "$root/etc/apt/sources.list" | sort -u | paste -sd ' ')"

# If the host's apt was told to accept Release files past Valid-Until (e.g. a snapshot mirror),
# the image needs the same setting to use that mirror.
VU=""
eval "$(apt-config shell VU Acquire::Check-Valid-Until)"
if [ "$VU" = false ]; then
    echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99triekv-valid-until"
    say "copied the host's Acquire::Check-Valid-Until \"false\""
fi

# Slim like the official images: keep docs/man/locales out now and in later installs.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/groff/"* "$root/usr/share/lintian/"* \
    "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb \
    "$root/var/log/"*.log "$root/var/log/apt/"* "$root/tmp/"* "$root/debootstrap"
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

# --- 5. import ------------------------------------------------------------------------------
say "importing $(du -sh --one-file-system "$root" | cut -f1) as $image"
tar --numeric-owner --xattrs -C "$root" -c . |
    docker import --change 'CMD ["bash"]' --message "debootstrap --variant=minbase $suite" - "$image" >/dev/null
say "done: $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
