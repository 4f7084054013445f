#!/usr/bin/env bash
# bench-media.sh - sori-anchor (jitter buffer off, and adaptive) and rtpengine (userspace, 2
# threads) under the same RTP load, measured one after the other at each step of one run (see
# cmd/sori-mediabench).
#
# Starts the relays on 127.0.0.1 with their own ng ports and RTP ranges, runs
# bin/sori-mediabench against them (K concurrent calls, 50 packets/s per direction, K doubling
# from CALLS while both forward more than 99.9 %), and stops them. rtpengine is skipped when it is
# not installed (`make bench-media` installs rtpengine-daemon).
#
# Environment: CALLS (100) MAX_CALLS (3200) MEASURE (10s) WARMUP (2s) OUT (results directory)
# RTP_PORTS (4000-31999) ANCHOR_BIN (bin/sori-anchor: another build to compare) SRTP (1: leg B of
# every call speaks SDES-SRTP, AES_CM_128_HMAC_SHA1_80; the relays decrypt and encrypt it)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CALLS=${CALLS:-100}
MAX_CALLS=${MAX_CALLS:-3200}
MEASURE=${MEASURE:-10s}
WARMUP=${WARMUP:-2s}
OUT=${OUT:-$(mktemp -d /tmp/sori-bench-media.XXXXXX)}
mkdir -p "$OUT"
ANCHOR_NG=${ANCHOR_NG:-2300}
RTPE_NG=${RTPE_NG:-2301}
ANCHOR_JB_NG=${ANCHOR_JB_NG:-2302}
RTP_PORTS=${RTP_PORTS:-4000-31999}
ANCHOR_BIN=${ANCHOR_BIN:-$ROOT/bin/sori-anchor}
PIDS=()
# sori-anchor with the buffer off forwards in the kernel (its eBPF fast path): the program's run
# time is counted in its CPU only with the kernel's BPF statistics on, restored afterwards.
BPF_STATS=$(cat /proc/sys/kernel/bpf_stats_enabled 2>/dev/null || echo)
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	if [ -n "$BPF_STATS" ]; then echo "$BPF_STATS" >/proc/sys/kernel/bpf_stats_enabled 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -n "$BPF_STATS" ]; then echo 1 >/proc/sys/kernel/bpf_stats_enabled 2>/dev/null || true; fi
for p in "$ANCHOR_NG" "$RTPE_NG" "$ANCHOR_JB_NG"; do
	if ss -Hlnu "sport = :$p" | grep -q .; then echo "port $p is in use; set ANCHOR_NG/RTPE_NG" >&2; exit 2; fi
done

# Each relay binds its media on its own loopback address (127.0.0.2-4) with the same range,
# RTP_PORTS (4000-31999: 14000 RTP/RTCP pairs, below the kernel's ephemeral range that the
# generator's phones use), so every step up to 3200 calls (6400 pairs per relay) fits equally.
"$ANCHOR_BIN" -ng "127.0.0.1:$ANCHOR_NG" -rtp-ports "$RTP_PORTS" -listen 127.0.0.2 -http "" \
	-media-timeout 0 -rtcp-interval 0 -jitter-buffer off -log-level warn >"$OUT/sori-anchor.log" 2>&1 &
PIDS+=($!)
relays=(-relay "sori-anchor=127.0.0.1:$ANCHOR_NG@$!")
"$ANCHOR_BIN" -ng "127.0.0.1:$ANCHOR_JB_NG" -rtp-ports "$RTP_PORTS" -listen 127.0.0.3 -http "" \
	-media-timeout 0 -rtcp-interval 5s -jitter-buffer adaptive -log-level warn >"$OUT/sori-anchor-jb.log" 2>&1 &
PIDS+=($!)
relays+=(-relay "anchor+jb=127.0.0.1:$ANCHOR_JB_NG@$!")
if command -v rtpengine >/dev/null 2>&1; then
	rtpengine --config-file=none --foreground --log-stderr --log-level=3 --interface=127.0.0.4 \
		--listen-ng="127.0.0.1:$RTPE_NG" --port-min="${RTP_PORTS%-*}" --port-max="${RTP_PORTS#*-}" --table=-1 --delete-delay=0 \
		--timeout=600 --num-threads=2 >"$OUT/rtpengine.log" 2>&1 &
	PIDS+=($!)
	relays+=(-relay "rtpengine=127.0.0.1:$RTPE_NG@$!")
else
	echo "rtpengine is not installed: measuring sori-anchor alone" >&2
fi
sleep 1
echo "$(date -Is) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT" | tee "$OUT/info.txt"
srtp=()
if [ "${SRTP:-0}" = 1 ]; then srtp=(-srtp); fi
"$ROOT/bin/sori-mediabench" "${relays[@]}" "${srtp[@]}" -calls "$CALLS" -max-calls "$MAX_CALLS" -measure "$MEASURE" -warmup "$WARMUP" | tee -a "$OUT/info.txt"
