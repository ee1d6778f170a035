#!/bin/sh
# bench/rocksdb_ref.sh - RocksDB reference numbers for the triekv engine benchmark.
#
# usage: bench/rocksdb_ref.sh OUT_DIR DATA_DIR
#
# Runs RocksDB's db_bench (Debian package rocksdb-tools) with the same shape as our engine
# benchmark: 1,000,000 keys of 16 bytes, 100-byte values, 1 thread, and prints one TSV line per
# benchmark to stdout, after a header line:
#
#   name  ops_per_sec  micros_per_op  p50_us  p99_us
#
#   <fill>                 random-order puts of NUM distinct keys, WAL on, no sync (the peer of
#                          our fsync "default" mode); the last memtable is flushed afterwards,
#                          outside the timed part, so the read DB is all SST files
#   readrandom_cached      NUM point reads over that DB, block cache (1 GiB) > data set
#   readrandom_smallcache  the same reads, block cache = data set / 10 (NUM*(key+value)/10);
#                          misses are served from the OS page cache (buffered reads, as ours)
#   <fill>_sync            SYNC_NUM puts on a fresh DB with sync=1: one WAL fdatasync per put
#                          (the peer of our fsync "strict" mode with one writer)
#
# <fill> is filluniquerandom by default: every key is written once, in random order, so the DB
# holds NUM keys and every read finds its key. db_bench's fillrandom draws keys with
# replacement (about 63% distinct for NUM draws, and then 37% of reads miss); set
# ROCKSDB_REF_FILL=fillrandom to get that instead.
#
# Flags worth knowing: compression_type=none (db_bench's values are built to compress to 50%,
# snappy would halve the DB and make the small cache relatively bigger); bloom_bits=10 (what
# RocksDB deployments and RocksDB's own benchmark scripts use; db_bench's default is no filter);
# statistics off, perf_level 1 (off); fixed seeds so the three runs of a comparison see the same
# keys. The Debian build of db_bench has assertions enabled (it prints a warning), which makes it
# somewhat slower than a release build of RocksDB.
#
# OUT_DIR receives the raw db_bench output (*.log, *.err), commands.txt (every command run),
# version.txt and results.tsv (a copy of stdout). DATA_DIR receives the databases in the
# subfolders rocksdb_ref_fill/ and rocksdb_ref_sync/, which are removed at the end unless
# ROCKSDB_REF_KEEP=1. About 20 s on an idle 2-core machine, 30 s or more on a busy one.
#
# Environment: DB_BENCH (binary, default db_bench from PATH), ROCKSDB_REF_NUM (1000000),
# ROCKSDB_REF_READS (= NUM), ROCKSDB_REF_SYNC_NUM (5000), ROCKSDB_REF_KEY_SIZE (16),
# ROCKSDB_REF_VALUE_SIZE (100), ROCKSDB_REF_FILL (filluniquerandom), ROCKSDB_REF_KEEP (0).
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 OUT_DIR DATA_DIR" >&2
    exit 2
fi

db_bench=${DB_BENCH:-db_bench}
num=${ROCKSDB_REF_NUM:-1000000}
reads=${ROCKSDB_REF_READS:-$num}
sync_num=${ROCKSDB_REF_SYNC_NUM:-5000}
key_size=${ROCKSDB_REF_KEY_SIZE:-16}
value_size=${ROCKSDB_REF_VALUE_SIZE:-100}
fill=${ROCKSDB_REF_FILL:-filluniquerandom}
keep=${ROCKSDB_REF_KEEP:-0}

case $fill in
fillrandom | filluniquerandom) ;;
*) echo "rocksdb_ref: ROCKSDB_REF_FILL must be fillrandom or filluniquerandom" >&2; exit 2 ;;
esac

if ! command -v "$db_bench" >/dev/null 2>&1; then
    echo "rocksdb_ref: cannot find $db_bench (install rocksdb-tools: make deps-bench)" >&2
    exit 1
fi

mkdir -p "$1" "$2"
out=$(cd "$1" && pwd)
data=$(cd "$2" && pwd)
fill_db=$data/rocksdb_ref_fill
sync_db=$data/rocksdb_ref_sync
rm -rf "$fill_db" "$sync_db"
: >"$out/commands.txt"

data_bytes=$((num * (key_size + value_size)))
cache_big=1073741824
if [ "$cache_big" -lt $((data_bytes * 4)) ]; then
    cache_big=$((data_bytes * 4))
fi
cache_small=$((data_bytes / 10))

version=$("$db_bench" --version 2>&1 | head -n 1)
echo "$version" >"$out/version.txt"
echo "rocksdb_ref: $version; data set $data_bytes bytes; small cache $cache_small bytes" >&2

# Flags shared by every run: same key/value shape, one thread, no compression, WAL on, no
# statistics, buffered I/O, latency histogram on. Each run states --sync itself.
common="--key_size=$key_size --value_size=$value_size --threads=1 --compression_type=none
        --bloom_bits=10 --disable_wal=false --statistics=false --histogram=1
        --use_direct_reads=false --mmap_read=false"

# run TAG ARGS...: runs db_bench, keeping its stdout in TAG.log and stderr in TAG.err.
run()
{
    tag=$1
    shift
    echo "$db_bench $*" >>"$out/commands.txt"
    if ! "$db_bench" "$@" >"$out/$tag.log" 2>"$out/$tag.err"; then
        echo "rocksdb_ref: db_bench failed for $tag; see $out/$tag.err" >&2
        tail -n 5 "$out/$tag.err" >&2
        exit 1
    fi
}

# row NAME TAG BENCH: prints "NAME ops micros p50 p99" from the result line of BENCH in TAG.log
# and the histogram's Percentiles line that follows it.
row()
{
    awk -v name="$1" -v bench="$3" '
        $1 == bench && $2 == ":" && $4 == "micros/op" { us = $3; ops = $5; seen = 1; next }
        seen && $1 == "Percentiles:" {
            for (i = 2; i < NF; i++) {
                if ($i == "P50:") p50 = $(i + 1)
                if ($i == "P99:") p99 = $(i + 1)
            }
            printf "%s\t%s\t%s\t%s\t%s\n", name, ops, us, p50, p99
            found = 1
            exit
        }
        END { if (!found) exit 1 }
    ' "$out/$2.log" || { echo "rocksdb_ref: no result for $3 in $out/$2.log" >&2; exit 1; }
}

# found TAG: warns when a read run did not find every key it looked up.
found()
{
    line=$(grep -o '([0-9]* of [0-9]* found)' "$out/$1.log" || true)
    case $line in
    "($reads of $reads found)") ;;
    *) echo "rocksdb_ref: $1: not every read found its key: $line" >&2 ;;
    esac
}

# shellcheck disable=SC2086 # $common is a list of flags
{
    run fill --benchmarks="$fill,flush,waitforcompaction" --db="$fill_db" --num="$num" --seed=1 \
        --sync=false $common
    run readrandom_cached --benchmarks=readrandom --use_existing_db=1 --db="$fill_db" --num="$num" \
        --reads="$reads" --cache_size="$cache_big" --seed=2 --sync=false $common
    run readrandom_smallcache --benchmarks=readrandom --use_existing_db=1 --db="$fill_db" \
        --num="$num" --reads="$reads" --cache_size="$cache_small" --seed=2 --sync=false $common
    run fill_sync --benchmarks="$fill" --db="$sync_db" --num="$sync_num" --seed=3 --sync=true $common
}

found readrandom_cached
found readrandom_smallcache

{
    printf 'name\tops_per_sec\tmicros_per_op\tp50_us\tp99_us\n'
    row "$fill" fill "$fill"
    row readrandom_cached readrandom_cached readrandom
    row readrandom_smallcache readrandom_smallcache readrandom
    row "${fill}_sync" fill_sync "$fill"
} >"$out/results.tsv"
cat "$out/results.tsv"

if [ "$keep" != 1 ]; then
    rm -rf "$fill_db" "$sync_db"
fi
