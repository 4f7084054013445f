#!/usr/bin/env bash
# make demo: starts sori-anchor and sori on testdata/demo/sori.yaml, has bin/sori-demo call for
# DURATION (default 3m), prints the quality page's address, and keeps sori running for the page
# until Ctrl-C (KEEP=0: stops when the calls end). STORE=redis keeps the map in a redis-server of
# the demo's own instead of in sori's memory.
#
# Fixed ports, all on loopback: SIP 127.0.0.1:5060 (UDP, TCP), HTTP 127.0.0.1:9060 (/quality,
# /api/quality, /metrics), ng 127.0.0.1:22222, RTP 30000-39999, the anchor's HTTP 127.0.0.1:9061,
# Redis 127.0.0.1:6390 (STORE=redis). The phones use 127.0.1.x, 127.0.2.x and 127.0.3.x, which
# Linux routes to the loopback interface. Call records and logs go to bin/demo/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
DURATION=${DURATION:-3m}
STORE=${STORE:-memory}
KEEP=${KEEP:-1}
out=$BIN/demo
mkdir -p "$out"
rm -f "$out/cdr.jsonl"
cfg=testdata/demo/sori.yaml

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case "$STORE" in
memory) ;;
redis)
	command -v redis-server >/dev/null || { echo "STORE=redis needs redis-server (make deps installs it)" >&2; exit 1; }
	redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 50); do redis-cli -p 6390 ping >/dev/null 2>&1 && break; sleep 0.1; done
	redis-cli -p 6390 ping >/dev/null || { echo "redis-server did not start:" >&2; cat "$out/redis.log" >&2; exit 1; }
	sed 's|store: memory|store: redis://127.0.0.1:6390/0|' "$cfg" >"$out/sori.yaml"
	cfg=$out/sori.yaml
	;;
*) echo "STORE is memory or redis, not $STORE" >&2; exit 1 ;;
esac

# No jitter buffer: on a busy machine it discards packets that come late, which would add loss
# the demo did not script; relayed at once, the map shows the phones' losses alone.
"$BIN/sori-anchor" -ng 127.0.0.1:22222 -rtp-ports 30000-39999 -listen 127.0.0.1 -http 127.0.0.1:9061 \
	-jitter-buffer off >"$out/anchor.log" 2>&1 &
pids+=($!)
"$BIN/sori" -config "$cfg" >"$out/sori.log" 2>&1 &
sori=$!
pids+=($sori)
echo "sori and sori-anchor started (logs in $out/); store: $STORE"

"$BIN/sori-demo" -config "$cfg" -duration "$DURATION" || {
	echo "sori-demo failed; the end of $out/sori.log:" >&2
	tail -20 "$out/sori.log" >&2
	exit 1
}
echo "Call records: $out/cdr.jsonl  (bin/sori quality --records $out/cdr.jsonl --since 1h --by network,hop,access)"
if [ "$KEEP" = 1 ]; then
	echo "sori keeps serving the page; Ctrl-C stops sori and sori-anchor."
	wait "$sori"
fi
