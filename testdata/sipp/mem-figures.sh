#!/usr/bin/env bash
# mem-figures.sh - the memory a binding and an answered call cost: bytes of live Go heap per
# binding in sori's memory store, bytes of Redis used_memory per binding in the Redis store, and
# bytes of live heap per answered, anchored call in sori and in sori-anchor.
#
# Everything goes through the real paths: SIPp's register.xml registers NBINDINGS distinct AORs
# with digest auth (REGISTER -> 401 -> REGISTER -> 200) against a real bin/sori, and
# load-call-uac.xml / call-uas.xml put NCALLS calls up through sori with every call's media
# anchored by real bin/sori-anchor processes (ng offer and answer), held HOLD_S seconds. No RTP flows: the
# per-call figure is the signalling, the call object and the anchor's per-call state with its 4
# sockets' Go side, not jitter buffers filled by packets (nor kernel socket buffers).
#
# Each figure is (after - before) / count, where before and after are read from /metrics
# (go_memstats_alloc_bytes = live heap, go_memstats_heap_inuse_bytes, process_resident_memory_bytes)
# right after two forced garbage collections (/debug/pprof/heap?gc=1: the second one also drops
# what sync.Pools hold), and after TXN_S (35) seconds of quiet, so the transactions of the
# REGISTERs and INVITEs (UDP timers L, M: 32 s) are gone and only the bindings or calls remain.
# sori answers a UDP REGISTER without a transaction and keeps its final responses (401 and 200)
# for retransmissions in two generations of sip.timer_j (5 s), which turn over only when more
# REGISTERs arrive: before a binding figure's second reading, 3 rounds of FLUSH_N refreshes, one
# timer_j apart, turn the registration burst's responses (and the maps sized for them) out.
# The live heap is the figure; heap in use (spans) and RSS (the runtime keeps freed pages a while)
# are printed beside it. sip.nonce_ttl is 5 s: the digest replay guard keeps the nonces of the
# last ~12.5 s (10 buckets of 1.25 s) at most, about what the default 300 s keeps at a refresh
# rate of 100 000 phones re-registering every hour (~28/s), rather than all 100 000 nonces of a
# burst.
#
# Environment: NBINDINGS (100000) REG_RATE (2000/s) NCALLS (5000) CALL_RATE (200/s)
#              HOLD_S (300) TXN_S (35) FLUSH_N (200) ANCHORS (as many as the open-file limit needs)
#              OUT (results directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=load-lib.sh
source "$HERE/load-lib.sh"
NBINDINGS=${NBINDINGS:-100000}
REG_RATE=${REG_RATE:-2000}
NCALLS=${NCALLS:-5000}
CALL_RATE=${CALL_RATE:-200}
HOLD_S=${HOLD_S:-300}
TXN_S=${TXN_S:-35}
TIMER_J_S=5
FLUSH_N=${FLUSH_N:-200}
OUT=${OUT:-$(mktemp -d /tmp/sori-mem-figures.XXXXXX)}
SIP_PORT=${SIP_PORT:-5190}
HTTP_PORT=${HTTP_PORT:-9190}
REDIS_PORT=${REDIS_PORT:-6393}
REG_PORT=${REG_PORT:-5191}
UAC_PORT=${UAC_PORT:-5192}
UAS_PORT=${UAS_PORT:-5193}
NG_PORT=${NG_PORT:-5194}
ANCHOR_HTTP_PORT=${ANCHOR_HTTP_PORT:-9194}
# The anchors bind their calls' sockets on addresses of their own (4 ports per call), below the
# kernel's ephemeral range.
MEDIA_IP=${MEDIA_IP:-127.0.0.5}
RTP_PORTS=${RTP_PORTS:-4000-31999}
mkdir -p "$OUT"
# Every anchored call holds 4 sockets in the anchor, and a process may open no more files than
# the hard limit (Go raises the soft one to it): with a lower limit than NCALLS calls need, the calls
# are spread over ANCHORS anchors (sori picks one by Call-ID hash; 20 % margin for the unevenness).
# Anchor i has ng port NG_PORT+2i, HTTP ANCHOR_HTTP_PORT+i and media address MEDIA_IP's last
# byte + i.
ulimit -Sn "$(ulimit -Hn)"
fd_limit=$(ulimit -Hn)
[ "$fd_limit" = unlimited ] && fd_limit=1048576
[ "$fd_limit" -gt 1024 ] || { echo "ulimit -Hn is $fd_limit: too low for the anchors" >&2; exit 2; }
ANCHORS=${ANCHORS:-$(((4 * NCALLS * 12 / 10 + fd_limit - 1024 - 1) / (fd_limit - 1024)))}
ANCHOR_NG=() ANCHOR_HTTP=()
for ((i = 0; i < ANCHORS; i++)); do ANCHOR_NG+=($((NG_PORT + 2 * i))) ANCHOR_HTTP+=($((ANCHOR_HTTP_PORT + i))); done
require_free_ports "$SIP_PORT" "$HTTP_PORT" "$REDIS_PORT" "$REG_PORT" "$UAC_PORT" "$UAS_PORT" "${ANCHOR_NG[@]}" "${ANCHOR_HTTP[@]}"

# stop PID: stops one process this script started.
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# metric FILE NAME [LABEL]: the sum of NAME's series (those whose labels contain LABEL), 0 if none.
metric() {
	awk -v n="$2" -v l="${3:-}" '/^#/ {next}
		{name=$1; sub(/\{.*/, "", name); if (name != n) next; if (l != "" && index($1, l) == 0) next; s += $NF}
		END {printf "%.0f\n", s}' "$1"
}

# snapshot "HTTP_PORT..." DEST: /metrics of the processes on those ports (DEST.PORT), one after the
# other, each after two forced collections (the second one's heap profile: DEST.PORT.heap.pb.gz,
# for go tool pprof -base); DEST has them all (metric sums over them).
snapshot() {
	local p
	for p in $1; do
		curl -sf -m 30 -o /dev/null "http://127.0.0.1:$p/debug/pprof/heap?gc=1"
		curl -sf -m 30 -o "$2.$p.heap.pb.gz" "http://127.0.0.1:$p/debug/pprof/heap?gc=1"
		curl -sf -m 10 "http://127.0.0.1:$p/metrics" >"$2.$p"
	done
	for p in $1; do cat "$2.$p"; done >"$2"
}

# per BEFORE AFTER COUNT NAME: (after - before) / count of metric NAME.
per() { awk -v a="$(metric "$1" "$4")" -v b="$(metric "$2" "$4")" -v n="$3" 'BEGIN{printf "%.0f", (b - a) / n}'; }

# heap_figures BEFORE AFTER COUNT: "bytes" "(heap_inuse=.. rss=..)" for the MEMORY lines.
heap_figures() {
	printf '%s (live heap after GC; heap_inuse %s, rss %s)' "$(per "$1" "$2" "$3" go_memstats_alloc_bytes)" \
		"$(per "$1" "$2" "$3" go_memstats_heap_inuse_bytes)" "$(per "$1" "$2" "$3" process_resident_memory_bytes)"
}

# register DIR CSV N RATE CONTACT: SIPp registers the first N users of CSV (users_csv), Contact
# CONTACT; exits 4 unless all N succeeded.
register() {
	local d=$1 n=$3 r=$4 ok
	mkdir -p "$d"
	head -$((n + 1)) "$2" >"$d/users.csv"
	(cd "$d" && timeout $((n / r + 120)) sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/register.xml" -inf "$d/users.csv" \
		-key domain sori.test -key contact "$5" -key expires 3600 -i 127.0.0.1 -p "$REG_PORT" \
		-m "$n" -r "$r" -rp 1000 -l $((r * 8 + 200)) -nostdin -trace_stat -stf stat.csv -fd 1 -trace_err -recv_timeout 5000 \
		-timeout $((n / r + 100))s -buff_size 4194304 >sipp.out 2>&1) || true
	ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") k=i; next} {v=$k} END{print v+0}' "$d/stat.csv" 2>/dev/null || echo 0)
	[ "$ok" = "$n" ] || { echo "registered $ok of $n (see $d)" >&2; exit 4; }
}

# flush_responses DIR CSV: FLUSH_N of CSV's users refresh their bindings in 3 rounds, TIMER_J_S + 1
# apart, so the response cache's generations holding the burst's responses turn over.
flush_responses() {
	local i
	for i in 1 2 3; do
		[ "$i" = 1 ] || sleep $((TIMER_J_S + 1))
		register "$1/flush-$i" "$2" "$FLUSH_N" 500 127.0.0.1:5099
	done
}

# wait_metric "HTTP_PORT..." NAME LABEL WANT TIMEOUT_S: until the metric, summed over the processes
# on those ports, reaches WANT; exits 4 after TIMEOUT_S.
wait_metric() {
	local v=0 i p
	for i in $(seq "$5"); do
		for p in $1; do curl -sf -m 5 "http://127.0.0.1:$p/metrics" || true; done >"$OUT/poll.txt"
		v=$(metric "$OUT/poll.txt" "$2" "$3")
		[ "$v" -ge "$4" ] && return 0
		sleep 1
	done
	echo "$2{$3} is $v after $5 s, not $4" >&2
	exit 4
}

nonce_yaml="  nonce_ttl: 5s
  timer_j: ${TIMER_J_S}s"
users_csv "$NBINDINGS" >"$OUT/users.csv"
log "results in $OUT; load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. Bindings in the memory store: sori's live heap before and after NBINDINGS REGISTERs.
mkdir -p "$OUT/mem"
sori_yaml memory "$NBINDINGS" "media:
  anchors: []" "$nonce_yaml" >"$OUT/mem/sori.yaml"
start_sori "$OUT/mem/sori.yaml" "$HTTP_PORT" "$OUT/mem/sori.log"
sleep 2
snapshot "$HTTP_PORT" "$OUT/mem/before.txt"
log "memory store: registering $NBINDINGS AORs at $REG_RATE/s"
register "$OUT/mem/register" "$OUT/users.csv" "$NBINDINGS" "$REG_RATE" 127.0.0.1:5099
log "waiting ${TXN_S}s for the REGISTER transactions to end"
sleep "$TXN_S"
flush_responses "$OUT/mem" "$OUT/users.csv"
wait_metric "$HTTP_PORT" sori_bindings "" "$NBINDINGS" 20
snapshot "$HTTP_PORT" "$OUT/mem/after.txt"
stop "$SORI_PID"
echo "MEMORY binding store=memory bindings=$NBINDINGS bytes_per_binding=$(heap_figures "$OUT/mem/before.txt" "$OUT/mem/after.txt" "$NBINDINGS")"

# 2. Bindings in the Redis store: Redis used_memory (and sori's heap) before and after.
mkdir -p "$OUT/redis"
start_redis "$REDIS_PORT" "$OUT/redis"
sori_yaml "redis://127.0.0.1:$REDIS_PORT/0" "$NBINDINGS" "media:
  anchors: []" "$nonce_yaml" >"$OUT/redis/sori.yaml"
start_sori "$OUT/redis/sori.yaml" "$HTTP_PORT" "$OUT/redis/sori.log"
sleep 2
snapshot "$HTTP_PORT" "$OUT/redis/before.txt"
redis-cli -p "$REDIS_PORT" info memory >"$OUT/redis/info-before.txt"
log "Redis store: registering $NBINDINGS AORs at $REG_RATE/s"
register "$OUT/redis/register" "$OUT/users.csv" "$NBINDINGS" "$REG_RATE" 127.0.0.1:5099
sleep "$TXN_S"
flush_responses "$OUT/redis" "$OUT/users.csv"
wait_metric "$HTTP_PORT" sori_bindings "" "$NBINDINGS" 20
snapshot "$HTTP_PORT" "$OUT/redis/after.txt"
redis-cli -p "$REDIS_PORT" info memory >"$OUT/redis/info-after.txt"
redis-cli -p "$REDIS_PORT" dbsize >"$OUT/redis/dbsize.txt"
stop "$SORI_PID"
stop "$REDIS_PID"
used() { awk -F: '$1=="used_memory"{print $2+0}' "$1"; }
echo "MEMORY binding store=redis bindings=$NBINDINGS bytes_per_binding=$(awk -v a="$(used "$OUT/redis/info-before.txt")" \
	-v b="$(used "$OUT/redis/info-after.txt")" -v n="$NBINDINGS" 'BEGIN{printf "%.0f", (b - a) / n}') (redis used_memory delta, $(cat "$OUT/redis/dbsize.txt") keys; sori's live heap grew $(per "$OUT/redis/before.txt" "$OUT/redis/after.txt" "$NBINDINGS" go_memstats_alloc_bytes) per binding: Redis connections, nonces)"

# 3. Answered calls, media anchored: sori's and the anchor's heap before and after NCALLS are up.
# Callees user0000.. are registered (Contact = the SIPp UAS); callers user<NCALLS>.. call them,
# one call per pair.
mkdir -p "$OUT/calls"
ng_yaml=""
for ((i = 0; i < ANCHORS; i++)); do
	"$ROOT/bin/sori-anchor" -ng "127.0.0.1:${ANCHOR_NG[i]}" -rtp-ports "$RTP_PORTS" -listen "${MEDIA_IP%.*}.$((${MEDIA_IP##*.} + i))" \
		-http "127.0.0.1:${ANCHOR_HTTP[i]}" -pprof -media-timeout 0 -log-level warn >"$OUT/calls/sori-anchor-$i.log" 2>&1 &
	PIDS+=($!)
	ng_yaml="$ng_yaml${ng_yaml:+, }\"127.0.0.1:${ANCHOR_NG[i]}\""
done
users_csv $((2 * NCALLS)) >"$OUT/calls/users.csv"
awk -F';' -v n="$NCALLS" 'NR==1{print "SEQUENTIAL"; next} NR-2<n {callee[NR-2]=$1; next} {print $1 ";" callee[NR-2-n] ";" $3}' \
	"$OUT/calls/users.csv" >"$OUT/calls/calls.csv"
sori_yaml memory $((2 * NCALLS)) "media:
  anchors: [$ng_yaml]" "$nonce_yaml" >"$OUT/calls/sori.yaml"
start_sori "$OUT/calls/sori.yaml" "$HTTP_PORT" "$OUT/calls/sori.log"
register "$OUT/calls/register" "$OUT/calls/users.csv" "$NCALLS" 1000 "127.0.0.1:$UAS_PORT"
mkdir -p "$OUT/calls/uas"
(cd "$OUT/calls/uas" && exec sipp -sf "$HERE/call-uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin -trace_err \
	-buff_size 4194304 >sipp.out 2>&1) &
PIDS+=($!)
sleep 1
kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "the SIPp UAS did not start" >&2; cat "$OUT/calls/uas/sipp.out" >&2; exit 4; }
log "waiting ${TXN_S}s for the callees' REGISTER transactions to end"
sleep "$TXN_S"
snapshot "$HTTP_PORT" "$OUT/calls/before.txt"
snapshot "${ANCHOR_HTTP[*]}" "$OUT/calls/before.anchor.txt"
log "putting $NCALLS calls up at $CALL_RATE/s (hold ${HOLD_S}s)"
mkdir -p "$OUT/calls/uac"
(cd "$OUT/calls/uac" && exec timeout $((HOLD_S + NCALLS / CALL_RATE + 120)) sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/load-call-uac.xml" \
	-inf "$OUT/calls/calls.csv" -key domain sori.test -d $((HOLD_S * 1000)) -i 127.0.0.1 -p "$UAC_PORT" \
	-r "$CALL_RATE" -rp 1000 -m "$NCALLS" -l "$NCALLS" -nostdin -trace_stat -stf stat.csv -fd 1 -recv_timeout 10000 \
	-timeout $((HOLD_S + NCALLS / CALL_RATE + 100))s -buff_size 4194304 >sipp.out 2>&1) &
PIDS+=($!)
UAC_PID=$!
wait_metric "$HTTP_PORT" sori_calls_active 'state="answered"' "$NCALLS" $((NCALLS / CALL_RATE + 60))
wait_metric "${ANCHOR_HTTP[*]}" sori_anchor_calls "" "$NCALLS" 10
log "$NCALLS calls answered; waiting ${TXN_S}s for their INVITE transactions to end"
sleep "$TXN_S"
snapshot "$HTTP_PORT" "$OUT/calls/after.txt"
snapshot "${ANCHOR_HTTP[*]}" "$OUT/calls/after.anchor.txt"
up=$(metric "$OUT/calls/after.txt" sori_calls_active 'state="answered"')
anchored=$(metric "$OUT/calls/after.anchor.txt" sori_anchor_calls)
{ [ "$up" = "$NCALLS" ] && [ "$anchored" = "$NCALLS" ]; } || { echo "at the reading $up calls were up and $anchored anchored, not $NCALLS" >&2; exit 4; }
stop "$UAC_PID"
echo "MEMORY call process=sori calls=$NCALLS bytes_per_call=$(heap_figures "$OUT/calls/before.txt" "$OUT/calls/after.txt" "$NCALLS")"
echo "MEMORY call process=sori-anchor calls=$NCALLS bytes_per_call=$(heap_figures "$OUT/calls/before.anchor.txt" "$OUT/calls/after.anchor.txt" "$NCALLS") (no RTP flowing; $ANCHORS anchor processes, $(for p in "${ANCHOR_HTTP[@]}"; do grep -h '^sori_anchor_calls ' "$OUT/calls/after.anchor.txt.$p" 2>/dev/null | awk '{printf "%s ", $2}'; done)calls each)"
