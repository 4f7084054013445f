#!/usr/bin/env bash
# soak.sh - sori and sori-anchor under a steady, modest call load for SOAK (10m) with every way
# a call can end mixed in, then a check that nothing was left behind: goroutines, heap, calls,
# forks, timers and anchored calls back to where they were before the load.
#
# Starts its own sori-anchor (-media-timeout MEDIA_TIMEOUT) and sori (memory store, timer C
# TIMER_C, media anchored, call records to a file) on free 127.0.0.1 ports from PORT_BASE up.
# Six scenario pairs run at once, each with its own 20 callees (registered with digest auth,
# Contact = its SIPp UAS) and 20 callers; every INVITE is challenged (407) and sent again with
# Proxy-Authorization:
#
#   scenario       caller (UAC)             callee (UAS)          the call ends                  record
#   caller-bye     load-call-uac.xml        call-uas.xml          answered, caller BYE after HOLD_MS answered/caller
#   callee-bye     soak-uac-wait-bye.xml    call-uas-bye.xml      answered, callee BYE after HOLD_MS answered/callee
#   cancel         soak-uac-cancel.xml      call-uas-cancel.xml   180, caller CANCEL after CANCEL_MS cancelled
#   busy           soak-uac-busy.xml        call-uas-busy.xml     486 from the callee             busy
#   no-answer      soak-uac-noanswer.xml    call-uas-cancel.xml   180 only: timer C, sori CANCELs  no-answer
#                                                                 the callee, 480 to the caller
#   media-timeout  soak-uac-wait-bye.xml    call-uas.xml          answered, no RTP: the anchor     media-timeout
#                                                                 reports it, sori BYEs both sides
#
# Each scenario's own ending is its success; any other ending, a timeout or an unexpected
# message fails the call in SIPp. Dialog timeout (sip.dialog_timeout, at least 1 minute) is
# left out: every call is anchored, so an answered call without BYE ends by media timeout
# after MEDIA_TIMEOUT, and one that lasted a minute would need a minute of RTP.
#
# Phases: callees register (each run waits for its 200s); WARM calls per scenario; drain;
# baseline sample; the load (RATE_* calls/s per scenario for SOAK) with a sample every SAMPLE_S;
# drain; end sample. A drain waits at least DRAIN_MIN_S (35 s: INVITE transactions keep their
# state 32 s after a CANCEL or a failure, timer C and the media timeout are shorter) and then
# until the call gauges are 0, at most DRAIN_MAX_S in all. Before each sample sori runs a
# garbage collection (/debug/pprof/heap?gc=1), so the heap figures are live memory.
#
# Exits 1 when, at the end, go_goroutines > baseline + MAX_GOROUTINE_GROWTH (20), heap in use
# > 2 x baseline + HEAP_SLACK_MB (16), sori_calls_held / sori_forks_active /
# sori_timers_pending (when sori has them; "absent" otherwise) / sori_calls_active /
# sori_anchor_calls are not 0, a SIPp call failed (caller or callee side), fewer calls were made
# than asked, a call record has another ending than its scenario's, or sori or the anchor died.
#
# Environment: SOAK (10m; 90s, 5m, 1h, or seconds) RATE_CALLER_BYE (8) RATE_CALLEE_BYE (6)
#              RATE_CANCEL (4) RATE_BUSY (4) RATE_NOANSWER (4) RATE_MEDIA (4) HOLD_MS (1000)
#              CANCEL_MS (1000) TIMER_C (3s) MEDIA_TIMEOUT (3s) WARM (3) SAMPLE_S (60; a quarter
#              of SOAK when shorter than 10 minutes, at least 10) DRAIN_MIN_S (35) DRAIN_MAX_S
#              (120) PORT_BASE (5260) RTP_PORTS (24000-25999) OUT (results directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=load-lib.sh
source "$HERE/load-lib.sh"

seconds() {
	case "$1" in
	*h) echo $((${1%h} * 3600)) ;;
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*) echo "$1" ;;
	esac
}
SOAK=${SOAK:-10m}
DUR=$(seconds "$SOAK")
[[ "$DUR" =~ ^[0-9]+$ ]] && [ "$DUR" -ge 10 ] || { echo "SOAK=$SOAK: give a duration of at least 10s (90s, 10m, 1h)" >&2; exit 2; }
HOLD_MS=${HOLD_MS:-1000}
CANCEL_MS=${CANCEL_MS:-1000}
TIMER_C=${TIMER_C:-3s}
MEDIA_TIMEOUT=${MEDIA_TIMEOUT:-3s}
WARM=${WARM:-3}
if [ -z "${SAMPLE_S:-}" ]; then
	SAMPLE_S=60
	[ "$DUR" -lt 600 ] && SAMPLE_S=$((DUR / 4 < 10 ? 10 : DUR / 4))
fi
DRAIN_MIN_S=${DRAIN_MIN_S:-35}
DRAIN_MAX_S=${DRAIN_MAX_S:-120}
MAX_GOROUTINE_GROWTH=${MAX_GOROUTINE_GROWTH:-20}
HEAP_SLACK_MB=${HEAP_SLACK_MB:-16}
PORT_BASE=${PORT_BASE:-5260}
RTP_PORTS=${RTP_PORTS:-24000-25999}
OUT=${OUT:-$(mktemp -d /tmp/sori-soak.XXXXXX)}
mkdir -p "$OUT"
NPER=20 # callees per scenario, and as many callers

NAMES=(caller-bye callee-bye cancel busy no-answer media-timeout)
RATES=("${RATE_CALLER_BYE:-8}" "${RATE_CALLEE_BYE:-6}" "${RATE_CANCEL:-4}" "${RATE_BUSY:-4}" "${RATE_NOANSWER:-4}" "${RATE_MEDIA:-4}")
UAC_SF=(load-call-uac.xml soak-uac-wait-bye.xml soak-uac-cancel.xml soak-uac-busy.xml soak-uac-noanswer.xml soak-uac-wait-bye.xml)
UAC_ARGS=("-d $HOLD_MS" "" "-d $CANCEL_MS" "" "" "")
UAS_SF=(call-uas.xml call-uas-bye.xml call-uas-cancel.xml call-uas-busy.xml call-uas-cancel.xml call-uas.xml)
UAS_ARGS=("" "-d $HOLD_MS" "" "" "" "")
EXPECT=(answered/caller answered/callee cancelled/any busy/any no-answer/any media-timeout/any)
NS=${#NAMES[@]}
for r in "${RATES[@]}"; do [[ "$r" =~ ^[1-9][0-9]*$ ]] || { echo "RATE_*=$r: give whole calls/s, at least 1" >&2; exit 2; }; done

# Free ports on 127.0.0.1 (nothing bound there, UDP or TCP), from PORT_BASE up.
free_ports() {
	local n=$1 p=$PORT_BASE
	PORTS=()
	while [ "${#PORTS[@]}" -lt "$n" ]; do
		if ! ss -Hanu "sport = :$p" | grep -q . && ! ss -Hant "sport = :$p" | grep -q .; then PORTS+=("$p"); fi
		p=$((p + 1))
		[ "$p" -gt 65000 ] && { echo "no free ports from $PORT_BASE" >&2; exit 2; }
	done
	return 0
}
free_ports $((5 + 2 * NS))
SIP_PORT=${PORTS[0]} HTTP_PORT=${PORTS[1]} NG_PORT=${PORTS[2]} ANCHOR_HTTP=${PORTS[3]} REG_PORT=${PORTS[4]}
UAC_PORTS=("${PORTS[@]:5:NS}")
UAS_PORTS=("${PORTS[@]:5+NS:NS}")
METRICS="http://127.0.0.1:$HTTP_PORT/metrics"
AMETRICS="http://127.0.0.1:$ANCHOR_HTTP/metrics"

# statcol DIR COLUMN: the last value of a SIPp -trace_stat column (0 without the file).
statcol() { awk -F';' -v c="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} {v=$k} END{print v+0}' "$1/stat.csv" 2>/dev/null || echo 0; }

# mval FILE NAME [LABEL]: the sum of NAME's series (those whose labels contain LABEL), or "absent".
mval() {
	awk -v n="$2" -v l="${3:-}" '/^#/ {next}
		{name=$1; sub(/\{.*/, "", name); if (name != n) next; if (l != "" && index($1, l) == 0) next; s += $NF; found = 1}
		END {if (found) printf "%.15g\n", s; else print "absent"}' "$1" 2>/dev/null || echo absent
}
mb() { case "$1" in absent) echo absent ;; *) awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}' ;; esac; }

# fetch_metrics DEST: sori's (after a forced GC) and the anchor's /metrics, DEST and DEST.anchor.
fetch_metrics() {
	curl -sf -m 10 -o /dev/null "http://127.0.0.1:$HTTP_PORT/debug/pprof/heap?gc=1" || true
	curl -sf -m 10 "$METRICS" >"$1" || : >"$1"
	curl -sf -m 10 "$AMETRICS" >"$1.anchor" || : >"$1.anchor"
}

# busy FILE: true while a call gauge (the new ones only when present) is not 0.
busy() {
	local m v
	for m in "sori_calls_active ringing" "sori_calls_active answered" sori_calls_held sori_forks_active sori_timers_pending; do
		# shellcheck disable=SC2086
		v=$(mval "$1" $m)
		case "$v" in absent | 0) ;; *) return 0 ;; esac
	done
	v=$(mval "$1.anchor" sori_anchor_calls)
	case "$v" in absent | 0) return 1 ;; *) return 0 ;; esac
}

# drain WHAT: at least DRAIN_MIN_S, then until nothing is busy, at most DRAIN_MAX_S in all.
drain() {
	local t0 el
	t0=$(date +%s)
	log "$1: waiting ${DRAIN_MIN_S}s for the transactions' 32 s timers, then for the call gauges to reach 0 (at most ${DRAIN_MAX_S}s)"
	while :; do
		el=$(($(date +%s) - t0))
		if [ "$el" -ge "$DRAIN_MIN_S" ]; then
			fetch_metrics "$OUT/drain.txt"
			busy "$OUT/drain.txt" || { log "$1: drained after ${el}s"; return 0; }
			[ "$el" -ge "$DRAIN_MAX_S" ] && { log "$1: call gauges still not 0 after ${el}s"; return 0; }
		fi
		sleep 2
	done
}

# sample LABEL: one row of the metrics table (samples.tsv); keeps the file as metrics-N-LABEL.
NSAMPLE=0
T_LOAD=0
sample() {
	local f
	f=$(printf '%s/metrics-%02d-%s.txt' "$OUT" "$NSAMPLE" "$1")
	NSAMPLE=$((NSAMPLE + 1))
	fetch_metrics "$f"
	local el=-
	[ "$T_LOAD" != 0 ] && el="$(($(date +%s) - T_LOAD))s"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$el" \
		"$(mval "$f" go_goroutines)" "$(mb "$(mval "$f" go_memstats_heap_inuse_bytes)")" "$(mb "$(mval "$f" go_memstats_heap_alloc_bytes)")" \
		"$(mval "$f" sori_calls_held)" "$(mval "$f" sori_forks_active)" "$(mval "$f" sori_timers_pending)" \
		"$(mval "$f" sori_calls_active ringing)" "$(mval "$f" sori_calls_active answered)" \
		"$(mval "$f" sori_trunk_calls)" "$(mval "$f.anchor" sori_anchor_calls)" >>"$OUT/samples.tsv"
	log "sample $(tail -1 "$OUT/samples.tsv" | tr '\t' ' ')"
	LAST_SAMPLE=$f
}
printf 'sample\tt\tgoroutines\theap_inuse_MB\theap_alloc_MB\tcalls_held\tforks_active\ttimers_pending\tactive_ringing\tactive_answered\ttrunk_calls\tanchor_calls\n' >"$OUT/samples.tsv"

# Users: scenario k has callees user(40k)..user(40k+19) and callers user(40k+20)..user(40k+39);
# caller i calls callee i.
for k in $(seq 0 $((NS - 1))); do
	awk -v b=$((2 * NPER * k)) -v n=$NPER 'BEGIN{print "SEQUENTIAL"; for(i=0;i<n;i++){u=sprintf("user%04d",b+i); print u ";pw" u ";[authentication username=" u " password=pw" u "]"}}' >"$OUT/callees-$k.csv"
	awk -v b=$((2 * NPER * k)) -v n=$NPER 'BEGIN{print "SEQUENTIAL"; for(i=0;i<n;i++){e=sprintf("user%04d",b+i); c=sprintf("user%04d",b+n+i); print c ";" e ";[authentication username=" c " password=pw" c "]"}}' >"$OUT/calls-$k.csv"
done

"$ROOT/bin/sori-anchor" -ng "127.0.0.1:$NG_PORT" -rtp-ports "$RTP_PORTS" -listen 127.0.0.1 -http "127.0.0.1:$ANCHOR_HTTP" \
	-media-timeout "$MEDIA_TIMEOUT" -log-level warn >"$OUT/sori-anchor.log" 2>&1 &
PIDS+=($!)
ANCHOR_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ANCHOR_HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$ANCHOR_HTTP/healthz" >/dev/null 2>&1 || { cat "$OUT/sori-anchor.log" >&2; echo "sori-anchor did not start" >&2; exit 3; }

sori_yaml memory $((2 * NPER * NS)) "media:
  anchors: [\"127.0.0.1:$NG_PORT\"]
cdr:
  file: $OUT/cdr.jsonl" "  timer_c: $TIMER_C" >"$OUT/sori.yaml"
start_sori "$OUT/sori.yaml" "$HTTP_PORT" "$OUT/sori.log"
for _ in $(seq 150); do
	[ "$(curl -sf "$METRICS" | awk '/^sori_media_anchor_up\{/ {print $NF}')" = 1 ] && break
	sleep 0.1
done
[ "$(curl -sf "$METRICS" | awk '/^sori_media_anchor_up\{/ {print $NF}')" = 1 ] || { echo "sori does not see the anchor up" >&2; exit 3; }
log "sori on udp:127.0.0.1:$SIP_PORT (http $HTTP_PORT), anchor ng $NG_PORT (http $ANCHOR_HTTP), timer C $TIMER_C, media timeout $MEDIA_TIMEOUT; soak ${DUR}s; results in $OUT"

# The callees: each scenario's registered with Contact = its UAS; every run waits for its 200s.
for k in $(seq 0 $((NS - 1))); do
	d="$OUT/register-${NAMES[$k]}"
	mkdir -p "$d"
	(cd "$d" && timeout -k 5 60 sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/register.xml" -inf "$OUT/callees-$k.csv" \
		-key domain sori.test -key contact "127.0.0.1:${UAS_PORTS[$k]}" -key expires 3600 -i 127.0.0.1 -p "$REG_PORT" \
		-ci 127.0.0.1 -m "$NPER" -r 100 -nostdin -trace_stat -stf stat.csv -fd 1 -recv_timeout 5000 -timeout 50s >sipp.out 2>&1) || true
	registered=$(statcol "$d" 'SuccessfulCall(C)')
	[ "$registered" = "$NPER" ] || { echo "${NAMES[$k]}: registered $registered of $NPER callees (see $d)" >&2; exit 4; }
done
log "registered $((NPER * NS)) callees"

# The callees' UASs, each exiting by itself after its WARM + load calls.
UAS_PIDS=()
for k in $(seq 0 $((NS - 1))); do
	d="$OUT/uas-${NAMES[$k]}"
	mkdir -p "$d"
	# shellcheck disable=SC2086
	(cd "$d" && exec timeout -k 5 $((DUR + DRAIN_MAX_S + 300)) sipp -sf "$HERE/${UAS_SF[$k]}" -i 127.0.0.1 -p "${UAS_PORTS[$k]}" -ci 127.0.0.1 \
		-m $((WARM + RATES[k] * DUR)) ${UAS_ARGS[$k]} -nostdin -trace_stat -stf stat.csv -fd 1 -trace_err \
		-recv_timeout 40000 -buff_size 4194304 >sipp.out 2>&1) &
	PIDS+=($!)
	UAS_PIDS+=($!)
done
for k in $(seq 0 $((NS - 1))); do
	for _ in $(seq 100); do ss -Hlnu "sport = :${UAS_PORTS[$k]}" | grep -q . && break; sleep 0.1; done
	ss -Hlnu "sport = :${UAS_PORTS[$k]}" | grep -q . || { echo "the ${NAMES[$k]} UAS did not start" >&2; cat "$OUT/uas-${NAMES[$k]}/sipp.out" >&2; exit 4; }
done

# uac DIR K CALLS RATE: the caller side of scenario K, in the background (sets UAC_PID).
uac() {
	local d=$1 k=$2 m=$3 r=$4
	mkdir -p "$d"
	# shellcheck disable=SC2086
	(cd "$d" && exec timeout -k 5 $((m / r + 150)) sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/${UAC_SF[$k]}" -inf "$OUT/calls-$k.csv" \
		-key domain sori.test ${UAC_ARGS[$k]} -i 127.0.0.1 -p "${UAC_PORTS[$k]}" -ci 127.0.0.1 -r "$r" -rp 1000 -m "$m" \
		-l $((r * 40 + 20)) -nostdin -trace_stat -stf stat.csv -fd 1 -trace_err -recv_timeout 40000 \
		-timeout $((m / r + 120))s -buff_size 4194304 >sipp.out 2>&1) &
	UAC_PID=$!
	PIDS+=($!)
}

# Warm-up: WARM calls of every scenario, all at once; they must all succeed.
if [ "$WARM" -gt 0 ]; then
	WPIDS=()
	for k in $(seq 0 $((NS - 1))); do
		uac "$OUT/warm-${NAMES[$k]}" "$k" "$WARM" "$WARM"
		WPIDS+=("$UAC_PID")
	done
	for p in "${WPIDS[@]}"; do wait "$p" || true; done
	for k in $(seq 0 $((NS - 1))); do
		ok=$(statcol "$OUT/warm-${NAMES[$k]}" 'SuccessfulCall(C)')
		[ "$ok" = "$WARM" ] || { echo "warm-up ${NAMES[$k]}: $ok of $WARM calls succeeded (see $OUT/warm-${NAMES[$k]})" >&2; exit 5; }
	done
	log "warm-up: $WARM calls of each scenario succeeded"
fi
drain "after the warm-up"
sample baseline
BASE=$LAST_SAMPLE

# The load.
LPIDS=()
T_LOAD=$(date +%s)
for k in $(seq 0 $((NS - 1))); do
	uac "$OUT/load-${NAMES[$k]}" "$k" $((RATES[k] * DUR)) "${RATES[k]}"
	LPIDS+=("$UAC_PID")
done
total=0
for r in "${RATES[@]}"; do total=$((total + r)); done
log "load: $total calls/s for ${DUR}s (${NAMES[*]} at ${RATES[*]} calls/s), a sample every ${SAMPLE_S}s"
next=$((T_LOAD + SAMPLE_S))
while :; do
	alive=0
	for p in "${LPIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
	[ "$alive" = 0 ] && break
	kill -0 "$SORI_PID" 2>/dev/null || { log "sori died"; break; }
	if [ "$(date +%s)" -ge "$next" ]; then
		sample load
		next=$((next + SAMPLE_S))
	fi
	sleep 1
done
for p in "${LPIDS[@]}"; do wait "$p" || true; done
log "the callers are done after $(($(date +%s) - T_LOAD))s"
# The UASs exit after their last call.
for _ in $(seq 60); do
	alive=0
	for p in "${UAS_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
	[ "$alive" = 0 ] && break
	sleep 1
done
drain "after the load"
sample end
END=$LAST_SAMPLE
for p in "${UAS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done

# The verdict.
PROBLEMS=()
problem() { PROBLEMS+=("$*"); }
kill -0 "$SORI_PID" 2>/dev/null || problem "sori is not running"
kill -0 "$ANCHOR_PID" 2>/dev/null || problem "sori-anchor is not running"

# Per scenario: SIPp's counts (warm-up and load), and the call records by ending.
printf 'scenario\trate/s\tending (record)\tcalls\tok\tfailed\tcallee ok\tcallee failed\trecords as expected\trecords otherwise\n' >"$OUT/scenarios.tsv"
awk '{to=""; d=""; h=""
	if (match($0, /"to":"sip:user[0-9]+@/)) to = substr($0, RSTART + 14, RLENGTH - 15)
	if (match($0, /"disposition":"[^"]*"/)) d = substr($0, RSTART + 15, RLENGTH - 16)
	if (match($0, /"hangup_by":"[^"]*"/)) h = substr($0, RSTART + 13, RLENGTH - 14)
	print (to == "" ? "-" : to), (d == "" ? "-" : d), (h == "" ? "-" : h)}' "$OUT/cdr.jsonl" 2>/dev/null >"$OUT/records.txt" || : >"$OUT/records.txt"
for k in $(seq 0 $((NS - 1))); do
	w="$OUT/warm-${NAMES[$k]}" l="$OUT/load-${NAMES[$k]}" s="$OUT/uas-${NAMES[$k]}"
	want=$((WARM + RATES[k] * DUR))
	made=$(($(statcol "$w" 'OutgoingCall(C)') + $(statcol "$l" 'OutgoingCall(C)')))
	ok=$(($(statcol "$w" 'SuccessfulCall(C)') + $(statcol "$l" 'SuccessfulCall(C)')))
	failed=$(($(statcol "$w" 'FailedCall(C)') + $(statcol "$l" 'FailedCall(C)')))
	sok=$(statcol "$s" 'SuccessfulCall(C)')
	sfailed=$(statcol "$s" 'FailedCall(C)')
	read -r good other < <(awk -v lo=$((2 * NPER * k)) -v hi=$((2 * NPER * k + NPER - 1)) -v e="${EXPECT[$k]}" '
		BEGIN {split(e, x, "/")}
		$1 !~ /^[0-9]+$/ {next}
		{u = $1 + 0; if (u < lo || u > hi) next; if ($2 == x[1] && (x[2] == "any" || $3 == x[2])) g++; else o++}
		END {print g + 0, o + 0}' "$OUT/records.txt")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${NAMES[$k]}" "${RATES[k]}" "${EXPECT[$k]%/any}" "$made/$want" "$ok" "$failed" \
		"$sok" "$sfailed" "$good" "$other" >>"$OUT/scenarios.tsv"
	[ "$made" = "$want" ] || problem "${NAMES[$k]}: $made of $want calls made"
	[ "$ok" = "$want" ] || problem "${NAMES[$k]}: $ok of $want calls succeeded for the callers"
	[ "$failed" = 0 ] || problem "${NAMES[$k]}: $failed calls failed for the callers"
	[ "$sok" = "$want" ] && [ "$sfailed" = 0 ] || problem "${NAMES[$k]}: the callee side succeeded $sok and failed $sfailed of $want calls"
	[ "$good" = "$want" ] && [ "$other" = 0 ] || problem "${NAMES[$k]}: $good call records ${EXPECT[$k]%/any}, $other otherwise, of $want calls"
done

# The end against the baseline.
g0=$(mval "$BASE" go_goroutines) g1=$(mval "$END" go_goroutines)
h0=$(mval "$BASE" go_memstats_heap_inuse_bytes) h1=$(mval "$END" go_memstats_heap_inuse_bytes)
if [ "$g0" = absent ] || [ "$g1" = absent ]; then problem "go_goroutines missing (baseline $g0, end $g1)"
elif [ "$g1" -gt $((g0 + MAX_GOROUTINE_GROWTH)) ]; then problem "goroutines $g1 at the end, baseline $g0 (+$MAX_GOROUTINE_GROWTH allowed)"; fi
if [ "$h0" = absent ] || [ "$h1" = absent ]; then problem "go_memstats_heap_inuse_bytes missing"
elif awk -v a="$h0" -v b="$h1" -v s="$HEAP_SLACK_MB" 'BEGIN{exit !(b > 2 * a + s * 1048576)}'; then
	problem "heap in use $(mb "$h1") MB at the end, baseline $(mb "$h0") MB (2x + $HEAP_SLACK_MB MB allowed)"
fi
for m in sori_calls_held sori_forks_active sori_timers_pending "sori_calls_active ringing" "sori_calls_active answered" sori_trunk_calls; do
	# shellcheck disable=SC2086
	v=$(mval "$END" $m)
	name=$m
	[ "${m#* }" != "$m" ] && name="${m% *}{state=\"${m#* }\"}"
	case "$v" in absent | 0) ;; *) problem "$name: $v at the end, not 0" ;; esac
done
v=$(mval "$END.anchor" sori_anchor_calls)
case "$v" in absent | 0) ;; *) problem "sori_anchor_calls: $v at the end, not 0" ;; esac

echo
echo "sori metrics (heap after a forced GC; absent: this sori has no such metric)"
column -t -s$'\t' "$OUT/samples.tsv"
echo
echo "scenarios (calls and failures as SIPp counted them, warm-up included; records: sori's call records)"
column -t -s$'\t' "$OUT/scenarios.tsv"
echo
echo "sori_calls_total: $(awk '/^sori_calls_total\{/ {sub(/sori_calls_total\{disposition="/, ""); sub(/"\}/, ""); printf "%s=%s ", $1, $2}' "$END")"
echo "sori-anchor: media timeouts $(mval "$END.anchor" sori_anchor_media_timeouts_total), ports in use $(mval "$END.anchor" sori_anchor_ports_in_use)"
echo "sori log: $(wc -l <"$OUT/sori.log") lines at level warn and above; results in $OUT"
if [ "${#PROBLEMS[@]}" -gt 0 ]; then
	echo "SOAK FAILED (${DUR}s, $total calls/s):"
	printf '  %s\n' "${PROBLEMS[@]}"
	exit 1
fi
echo "SOAK PASSED (${DUR}s, $total calls/s): every call ended as its scenario expects; goroutines $g0 -> $g1, heap in use $(mb "$h0") -> $(mb "$h1") MB; call gauges back to 0"
