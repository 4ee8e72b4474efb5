#!/usr/bin/env bash
# drover-quick.sh — a one-minute end-to-end check of drover on the harness's topology.
#
# Usage (root):  bench/drover-quick.sh [--encap esp|vxlan] [--cipher C] [--time S] [--streams N]
#                [--perf FILE | --perf-system FILE]
# It holds the harness's `custom` mode up (overlay-bench.sh --hold, through drover-bench.sh),
# runs iperf3 container to container for S seconds (default 5) with 1 and N (default 4)
# streams, and prints Gbit/s, the routers' CPU and peak RSS. With --perf FILE it records
# `perf record -g` of both drover processes during the N-stream run (read it with
# `perf report -i FILE --no-children`); --perf-system FILE records the whole machine
# instead (iperf3 and the kernel's share too: `perf report --sort comm`). Numbers are for comparing changes, one after the
# other on the same machine; the tables in docs/benchmarks.md come from the full harness.
# KEEP_LOG=1 keeps the harness log (its path is printed) to see why a run failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENCAP=esp CIPHER=aes-128-gcm T=5 STREAMS=4 PERF="" PERFSYS=""
while [ $# -gt 0 ]; do
  case $1 in
    --encap) ENCAP=$2; shift 2 ;;
    --cipher) CIPHER=$2; shift 2 ;;
    --time) T=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --perf) PERF=$2; shift 2 ;;
    --perf-system) PERF=$2 PERFSYS=1; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "drover-quick: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "drover-quick: needs root" >&2; exit 1; }
CACHE=${OB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/overlay-bench}
RUN=$CACHE/run
P=${OB_PREFIX:-ob-}
LOG=$(mktemp /tmp/drv-quick.XXXXXX)
HOLDPID=""
cleanup() {
  [ -d "$RUN" ] && touch "$RUN/release" 2>/dev/null || true
  [ -n "$HOLDPID" ] && wait "$HOLDPID" 2>/dev/null || true
  [ -n "${KEEP_LOG:-}" ] && echo "log: $LOG" >&2 || rm -f "$LOG"
}
trap cleanup EXIT
"$HERE/drover-bench.sh" --encap "$ENCAP" --cipher "$CIPHER" -- --hold custom >"$LOG" 2>&1 &
HOLDPID=$!
for _ in $(seq 120); do
  grep -q Holding "$LOG" && break
  kill -0 "$HOLDPID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.5
done
grep -q Holding "$LOG" || { cat "$LOG" >&2; echo "drover-quick: harness did not come up" >&2; exit 1; }
pids=$( (ip netns pids "${P}ha"; ip netns pids "${P}hb") | while read -r p; do
  [ "$(cat /proc/"$p"/comm 2>/dev/null)" = drover ] && echo "$p"; done | paste -sd, -)
[ -n "$pids" ] || { echo "drover-quick: no drover process found" >&2; exit 1; }
ip netns exec "${P}cb" iperf3 -s -D -p 5298 --pidfile "$RUN/quick-iperf.pid" >/dev/null 2>&1
sleep 0.3
ticks() { local t=0 p; for p in ${pids//,/ }; do t=$((t + $(awk '{print $14+$15}' /proc/"$p"/stat))); done; echo $t; }
run() {  # run STREAMS
  local t0 t1 g
  t0=$(ticks)
  g=$(ip netns exec "${P}ca" iperf3 -c 198.19.2.2 -p 5298 -t "$T" -P "$1" -J | jq -r '.end.sum_received.bits_per_second/1e9')
  t1=$(ticks)
  printf '%d stream(s): %.2f Gbit/s, routers %.2f cores\n' "$1" "$g" "$(echo "($t1-$t0)/$(getconf CLK_TCK)/$T" | bc -l)"
}
run 1
if [ -n "$PERF" ]; then
  if [ -n "$PERFSYS" ]; then target=(-a); else target=(-p "$pids"); fi
  perf record -g -o "$PERF" "${target[@]}" -- sleep "$T" >/dev/null 2>&1 &
  PERFPID=$!
  run "$STREAMS"
  wait "$PERFPID" || true
else
  run "$STREAMS"
fi
for p in ${pids//,/ }; do echo "drover pid $p: peak RSS $(awk '/VmHWM/{print $2, $3}' /proc/"$p"/status)"; done
kill "$(cat "$RUN/quick-iperf.pid")" 2>/dev/null || true
