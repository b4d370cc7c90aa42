#!/usr/bin/env bash
# Instructions per message through the router and through a bare tokio channel, counted by
# callgrind (repeatable on a busy machine, unlike a clock). Each workload runs twice, with N and
# 2N messages; the difference divided by N leaves out start-up and shutdown.
#   scripts/callgrind-router.sh [N]      (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemill/target}"
exe=$(cargo bench -p tidemill --bench router --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "router" and m.get("executable"):
        print(m["executable"])')
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
count() { # workload messages -> total instructions
  TIDEMILL_BENCH_ONLY="$1" TIDEMILL_BENCH_MESSAGES="$2" \
    valgrind --tool=callgrind --callgrind-out-file="$out/$1.$2" "$exe" >/dev/null 2>&1
  awk '/^(summary|totals):/ { print $2; exit }' "$out/$1.$2"
}
printf '%-14s %14s\n' workload 'instr/message'
for workload in channel router router-batch; do
  small=$(count "$workload" "$n")
  large=$(count "$workload" $((2 * n)))
  printf '%-14s %14d\n' "$workload" $(( (large - small) / n ))
done
