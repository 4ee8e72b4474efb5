#!/usr/bin/env bash
# drover-bench.sh — run ../shared/bench/overlay-bench.sh with drover as its `custom` mode.
#
# Usage (root):  bench/drover-bench.sh [--encap esp|vxlan] [--cipher C] [--direct] [--bench PATH] [--] [overlay-bench args and modes]
#   e.g.  bench/drover-bench.sh -- --tsv direct vxlan wireguard-go libipsec-gcm custom
#         bench/drover-bench.sh --encap vxlan -- --tsv vxlan custom
#         bench/drover-bench.sh --direct -- --tsv direct custom
# --direct runs both sides in cluster mode (a fresh cluster key, each joining the other) with
# cluster.direct and direct_trusted: the hosts share the underlay subnet, so drover installs
# kernel routes via the peer and stays off the data path (docs/routing.md); containers keep
# the underlay's 1500-byte MTU, as in the harness's direct mode.
# It builds drover (CGO_ENABLED=0) into a temporary directory, sets the harness's ROUTER_*
# contract (see the top of overlay-bench.sh) so that each host namespace runs
# `drover run` with a generated config (manual SAs with fresh random keys), and runs the
# harness. Only namespaces the harness creates are touched. DROVER_ENV="K=V ..." is passed to
# each drover process (e.g. DROVER_ENV=GOMAXPROCS=1 to compare runtime settings);
# with --direct, DROVER_CONFIG_EXTRA is appended to each config (e.g. "firewall: {forward: false}").
# DROVER_BUILD=PATH runs that binary instead of building one (e.g. a release build from
# `go run ./tools/release`, to compare it with a plain go build).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DIRECT=0 ENCAP=esp CIPHER=aes-128-gcm BENCH=${OVERLAY_BENCH:-$ROOT/../shared/bench/overlay-bench.sh}
while [ $# -gt 0 ]; do
  case $1 in
    --encap) ENCAP=$2; shift 2 ;;
    --cipher) CIPHER=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    --direct) DIRECT=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "drover-bench: needs root" >&2; exit 1; }
[ -x "$BENCH" ] || [ -f "$BENCH" ] || { echo "drover-bench: harness not found: $BENCH (--bench PATH)" >&2; exit 1; }
case $ENCAP in esp|vxlan) ;; *) echo "drover-bench: --encap esp|vxlan" >&2; exit 2 ;; esac
case $CIPHER in aes-128-gcm) KEYLEN=20 ;; aes-256-gcm|chacha20-poly1305) KEYLEN=36 ;; *) echo "drover-bench: bad --cipher" >&2; exit 2 ;; esac

BINDIR=$(mktemp -d /tmp/drv-bench-bin.XXXXXX)
trap 'rm -rf "$BINDIR"' EXIT
if [ -n "${DROVER_BUILD:-}" ]; then
  cp "$DROVER_BUILD" "$BINDIR/drover"
else
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$BINDIR/drover" ./cmd/drover)
fi

export DROVER_ENV=${DROVER_ENV:-} DROVER_CONFIG_EXTRA=${DROVER_CONFIG_EXTRA:-} DROVER_BIN=$BINDIR/drover DROVER_ENCAP=$ENCAP DROVER_CIPHER=$CIPHER DROVER_KEYLEN=$KEYLEN
export ROUTER_NAME="drover-$ENCAP$([ "$ENCAP" = esp ] && echo "-$CIPHER")"
# The TUN MTU drover computes for a 1500-byte IPv4 underlay; containers get the same.
if [ "$ENCAP" = esp ]; then export ROUTER_MTU=1438; else export ROUTER_MTU=1450; fi
export ROUTER_ADDR=0 ROUTER_DEV_A=ob-drva ROUTER_DEV_B=ob-drvb
# Keys: one per direction, random, written once before the routers start.
export ROUTER_SETUP='umask 077; for d in ab ba; do head -c "$DROVER_KEYLEN" /dev/urandom | od -An -tx1 | tr -d " \n" > "$OB_RUNDIR/key-$d"; done'
ROUTER_CMD='umask 077  # the config holds ESP keys: drover refuses it readable by others
  peer=$([ "$OB_SIDE" = a ] && echo b || echo a)
  if [ "$OB_SIDE" = a ]; then out=ab; in=ba; spo=0x1001; spi=0x1002; else out=ba; in=ab; spo=0x1002; spi=0x1001; fi
  cfg=$OB_WORKDIR/drover.yaml
  {
    echo "node: {name: $OB_SIDE, underlay: $OB_LOCAL_UNDERLAY, tun: $OB_DEV, bridge: br0, prefixes: [$OB_LOCAL_SUBNET, $OB_LOCAL_TUNNEL_IP/32], address: [$OB_LOCAL_TUNNEL_IP]}"
    echo "encapsulation: $DROVER_ENCAP"
    echo "cipher: $DROVER_CIPHER"
    echo "control_socket: $OB_WORKDIR/drover.sock"
    echo "state_dir: $OB_WORKDIR/state"
    echo "log: {level: warn}"
    echo "peers:"
    echo "  - name: $peer"
    echo "    underlay: $OB_PEER_UNDERLAY"
    echo "    prefixes: [$OB_PEER_SUBNET, $OB_PEER_TUNNEL_IP/32]"
    if [ "$DROVER_ENCAP" = esp ]; then
      echo "    sa: {out: {spi: $spo, key: \"$(cat "$OB_RUNDIR/key-$out")\"}, in: {spi: $spi, key: \"$(cat "$OB_RUNDIR/key-$in")\"}}"
    fi
  } > "$cfg"
  exec env ${DROVER_ENV:-} "$DROVER_BIN" run --config "$cfg"'
if [ "$DIRECT" = 1 ]; then
  export ROUTER_NAME="drover-direct" ROUTER_MTU=1500
  # One cluster key for both; drover routes the peer's subnet itself (no harness route:
  # a lone space makes the harness's route list empty).
  export ROUTER_SETUP='umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n" > "$OB_RUNDIR/cluster.key"'
  export ROUTER_ROUTES_A=" " ROUTER_ROUTES_B=" "
  ROUTER_CMD='umask 077
  cfg=$OB_WORKDIR/drover.yaml
  {
    echo "node: {name: $OB_SIDE, underlay: $OB_LOCAL_UNDERLAY, tun: $OB_DEV, bridge: br0, prefixes: [$OB_LOCAL_SUBNET, $OB_LOCAL_TUNNEL_IP/32], address: [$OB_LOCAL_TUNNEL_IP]}"
    echo "encapsulation: $DROVER_ENCAP"
    echo "cipher: $DROVER_CIPHER"
    echo "control_socket: $OB_WORKDIR/drover.sock"
    echo "state_dir: $OB_WORKDIR/state"
    echo "log: {level: warn}"
    echo "http: {listen: none}"
    echo "cluster: {key_file: $OB_RUNDIR/cluster.key, join: [$OB_PEER_UNDERLAY], bootstrap: true, direct: true, direct_trusted: true}"
    [ -z "${DROVER_CONFIG_EXTRA:-}" ] || printf "%s\n" "$DROVER_CONFIG_EXTRA"
  } > "$cfg"
  exec env ${DROVER_ENV:-} "$DROVER_BIN" run --config "$cfg"'
fi
export ROUTER_CMD_A="$ROUTER_CMD" ROUTER_CMD_B="$ROUTER_CMD"
# drover installs its own routes; the harness's default route command is then a no-op replace.
bash "$BENCH" "$@"
