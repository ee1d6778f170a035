#!/bin/sh
# deploy/deps.sh - installs the Debian packages triekv needs that are missing, and nothing else.
#   deploy/deps.sh build   compiler, libraries and headers (make)
#   deploy/deps.sh test    build + what the test suites drive (make test)
#   deploy/deps.sh bench   test + the peers and load tools of make bench
# Uses apt-get, so it must run as root (or with sudo available). Already-installed packages are
# left alone and no package index is fetched when nothing is missing.
set -eu

build="gcc make pkg-config libc6-dev libh2o-evloop-dev libssl-dev libcurl4-openssl-dev liburing-dev
       libjansson-dev libisal-dev"
test="$build python3 python3-pytest python3-requests python3-yaml curl iproute2 procps debootstrap"
bench="$test wrk rocksdb-tools redis-server webdis"

case "${1:-build}" in
build) want=$build ;;
test) want=$test ;;
bench) want=$bench ;;
*) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install:$missing" >&2; exit 1; }
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# shellcheck disable=SC2086
$sudo apt-get install -y -q --no-install-recommends $missing
