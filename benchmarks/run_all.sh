#!/bin/sh
# Run every benchmark in sequence (about 5 minutes on 2 cores, 4 GiB free under $ROOT).
# Usage: benchmarks/run_all.sh [--root DIR] [--reps N]     output: stdout (tee it to keep it)
set -u
here=$(cd "$(dirname "$0")" && pwd)
"$here/setup_venv.sh" >/dev/null
rc=0
for b in bench_hash bench_push bench_run bench_verify bench_hostile; do
    echo "== $b"
    python3 "$here/$b.py" "$@" || rc=1
    echo
done
exit $rc
