#!/bin/sh
# deploy/cluster.sh - local triekv processes in the foreground, from the configs in deploy/:
#   deploy/cluster.sh            a main (3030) and a replica (3031, replication port 3040)
#   deploy/cluster.sh sharded    two shards behind triekv-proxy (3000): shard a is that main and
#                                replica, shard b a main (3032) and a replica (3033, replication
#                                port 3041); deploy/proxy.json splits keys at "m"
# Ctrl-C (or SIGTERM) stops them all cleanly, each finishing its requests (nodes checkpoint); if
# one exits on its own, the others are stopped too. Used by `make cluster` and `make sharded`.
# Extra arguments go to every server (e.g. --bind 127.0.0.1).
set -eu
cd "$(dirname "$0")/.."
bin=${TRIEKV_BIN:-bin}
mode=single
if [ "${1:-}" = sharded ]; then
    mode=sharded
    shift
fi
mkdir -p data
pids=""
start() { # name, then the command line
    name=$1
    shift
    "$@" &
    pids="$pids $!"
    echo "cluster: $name (pid $!)"
}
start "replica :3031" "$bin/triekv-server" --config deploy/replica.json "$@"
start "main :3030" "$bin/triekv-server" --config deploy/main.json "$@"
if [ "$mode" = sharded ]; then
    start "replica b :3033" "$bin/triekv-server" --config deploy/replica-b.json "$@"
    start "main b :3032" "$bin/triekv-server" --config deploy/main-b.json "$@"
    start "proxy :3000" "$bin/triekv-proxy" --config deploy/proxy.json
fi
stop() {
    trap - INT TERM
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for p in $pids; do
        wait "$p" 2>/dev/null || true
    done
    echo "cluster: stopped"
    exit 0
}
trap stop INT TERM
echo "cluster: running; Ctrl-C stops every process"
while :; do
    for p in $pids; do
        if ! kill -0 "$p" 2>/dev/null; then
            echo "cluster: process $p exited; stopping the others" >&2
            stop
        fi
    done
    sleep 1
done
