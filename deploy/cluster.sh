#!/bin/sh
# deploy/cluster.sh - a main (port 3030) and a replica (3031, replication port 3040) as local
# processes, from deploy/main.json and deploy/replica.json, in the foreground: Ctrl-C (or SIGTERM)
# stops both cleanly, each finishing its requests and checkpointing. Used by `make cluster`.
# Extra arguments go to both servers (e.g. --bind 127.0.0.1).
set -eu
cd "$(dirname "$0")/.."
bin=${TRIEKV_BIN:-bin}
mkdir -p data
"$bin/triekv-server" --config deploy/replica.json "$@" &
replica=$!
"$bin/triekv-server" --config deploy/main.json "$@" &
main=$!
stop() {
    trap - INT TERM
    kill -TERM "$main" "$replica" 2>/dev/null || true
    wait "$main" 2>/dev/null || true
    wait "$replica" 2>/dev/null || true
    echo "cluster: stopped"
    exit 0
}
trap stop INT TERM
echo "cluster: main on :3030 (pid $main), replica on :3031 (pid $replica); Ctrl-C stops both"
# if either dies on its own, stop the other too
while kill -0 "$main" 2>/dev/null && kill -0 "$replica" 2>/dev/null; do
    sleep 1
done
echo "cluster: a node exited; stopping the other" >&2
stop
