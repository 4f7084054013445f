#!/usr/bin/env bash
# load-calls.sh - the highest call rate (short calls, every INVITE digest-authenticated) that
# sori sustains for STEP_S seconds with no failed call, and the response times at it.
#
# Starts its own sori (bin/sori, built by `make load-calls`) and, with STORE=redis, its own
# redis-server, on 127.0.0.1. NCALLEES users (user0000..) register with digest auth, all
# pointing at one SIPp UAS (call-uas.xml: 180, 200, waits for the BYE); then SIPp steps of
# load-call-uac.xml: callers user<NCALLEES>.. each call a callee, INVITE -> 407 -> ACK ->
# INVITE with Proxy-Authorization -> 100/180/200 -> ACK -> hold HOLD_MS -> BYE -> 200. Every
# message passes through sori (it record-routes). Steps and the rate search: see load-lib.sh.
# A call counts as failed when any of its messages times out or gets an unexpected answer.
#
# With MEDIA=1 it also starts bin/sori-anchor and every call's media is anchored (ng offer,
# answer and delete per call), as the reference's Kamailio + rtpengine runs are.
#
# Environment: STEP_S (20) START_RATE (100) MAX_RATE (8000) BUDGET_S (300) NCALLEES (1000)
#              HOLD_MS (200) STORE (memory; "redis" for the Redis store, "redis-cluster" for a
#              Redis Cluster of 3 masters with a replica each) MEDIA (0; 1: anchored)
#              OUT (results directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=load-lib.sh
source "$HERE/load-lib.sh"
STEP_S=${STEP_S:-20}
START_RATE=${START_RATE:-100}
MAX_RATE=${MAX_RATE:-8000}
BUDGET_S=${BUDGET_S:-300}
NCALLEES=${NCALLEES:-1000}
HOLD_MS=${HOLD_MS:-200}
STORE=${STORE:-memory}
MEDIA=${MEDIA:-0}
NG_PORT=${NG_PORT:-5174}
OUT=${OUT:-$(mktemp -d /tmp/sori-load-calls.XXXXXX)}
SIP_PORT=${SIP_PORT:-5170}
HTTP_PORT=${HTTP_PORT:-9170}
REDIS_PORT=${REDIS_PORT:-6392}
UAC_PORT=${UAC_PORT:-5171}
UAS_PORT=${UAS_PORT:-5172}
REG_PORT=${REG_PORT:-5173}
CLUSTER_PORT=${CLUSTER_PORT:-6430}
mkdir -p "$OUT"
require_free_ports "$SIP_PORT" "$HTTP_PORT" "$REDIS_PORT" "$UAC_PORT" "$UAS_PORT" "$REG_PORT" "$NG_PORT"

store_url=memory REDIS_PIDS=""
case "$STORE" in
memory) ;;
redis)
	start_redis "$REDIS_PORT" "$OUT"
	store_url="redis://127.0.0.1:$REDIS_PORT/0" REDIS_PIDS=$REDIS_PID
	;;
redis-cluster)
	# shellcheck disable=SC2046
	require_free_ports $(cluster_ports "$CLUSTER_PORT")
	start_cluster "$CLUSTER_PORT" "$OUT"
	store_url=$CLUSTER_URL REDIS_PIDS=$(for e in $CLUSTER_PIDS; do printf '%s ' "${e#*:}"; done)
	;;
*) echo "STORE=$STORE: give memory, redis or redis-cluster" >&2; exit 2 ;;
esac
media_yaml="media:
  anchors: []"
if [ "$MEDIA" = 1 ]; then
	"$ROOT/bin/sori-anchor" -ng "127.0.0.1:$NG_PORT" -rtp-ports 20000-29999 -listen 127.0.0.1 -http "${ANCHOR_HTTP:-}" ${ANCHOR_FLAGS:-} \
		-log-level warn >"$OUT/sori-anchor.log" 2>&1 &
	PIDS+=($!)
	ANCHOR_PID=$!
	media_yaml="media:
  anchors: [\"127.0.0.1:$NG_PORT\"]"
fi
users_csv $((2 * NCALLEES)) >"$OUT/users.csv"
head -$((NCALLEES + 1)) "$OUT/users.csv" >"$OUT/callees.csv"
# caller;callee;[authentication ...]: caller user<NCALLEES+i> calls user<i>.
awk -F';' -v n="$NCALLEES" 'NR==1{print "SEQUENTIAL"; next} NR-2<n {callee[NR-2]=$1; next} {print $1 ";" callee[NR-2-n] ";" $3}' \
	"$OUT/users.csv" >"$OUT/calls.csv"
sori_yaml "$store_url" $((2 * NCALLEES)) "$media_yaml" >"$OUT/sori.yaml"
start_sori "$OUT/sori.yaml" "$HTTP_PORT" "$OUT/sori.log"
SRV_PIDS="$SORI_PID $REDIS_PIDS ${ANCHOR_PID:-}"

# The callees: registered with digest auth, Contact = the UAS.
mkdir -p "$OUT/register"
(cd "$OUT/register" && timeout 120 sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/register.xml" -inf "$OUT/callees.csv" \
	-key domain sori.test -key contact "127.0.0.1:$UAS_PORT" -key expires 3600 -i 127.0.0.1 -p "$REG_PORT" \
	-m "$NCALLEES" -r 500 -nostdin -trace_stat -stf stat.csv -fd 1 -recv_timeout 5000 -timeout 100s >sipp.out 2>&1) || true
registered=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") k=i; next} {v=$k} END{print v+0}' "$OUT/register/stat.csv")
[ "$registered" = "$NCALLEES" ] || { echo "registered $registered of $NCALLEES callees" >&2; exit 4; }

mkdir -p "$OUT/uas"
(cd "$OUT/uas" && exec sipp -sf "$HERE/call-uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin -trace_err \
	-buff_size 4194304 >sipp.out 2>&1) &
PIDS+=($!)
sleep 1
kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "the SIPp UAS did not start" >&2; cat "$OUT/uas/sipp.out" >&2; exit 4; }

# step RATE KIND -> last line "PASS SETUP_P50 SETUP_P99 BYE_P50 BYE_P99 CPU"
step() {
	local r=$1 kind=$2 d
	d="$OUT/step-$(printf %05d "$r")-$kind"
	[ -e "$d" ] && d="$d-$(date +%s)"
	sipp_step "$d" "$r" "$SRV_PIDS" "127.0.0.1:$SIP_PORT" -sf "$HERE/load-call-uac.xml" -inf "$OUT/calls.csv" \
		-key domain sori.test -d "$HOLD_MS" -i 127.0.0.1 -p "$UAC_PORT"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$r" "$STEP_PASS" "$STEP_OK/$STEP_M" "$STEP_FAIL" "$STEP_ACH" \
		"${STEP_P1// //}" "${STEP_P2// //}" "$STEP_CPU" >>"$OUT/summary.tsv"
	log "[$kind] rate=$r cps pass=$STEP_PASS ok=$STEP_OK/$STEP_M failed=$STEP_FAIL achieved=$STEP_ACH/s setup p50/p99=${STEP_P1// //} ms bye p50/p99=${STEP_P2// //} ms server cpu=$STEP_CPU%"
	echo "$STEP_PASS $STEP_P1 $STEP_P2 $STEP_CPU"
	# let the UAS finish its calls and sori forget their transactions
	sleep $((3 + HOLD_MS / 1000))
}

printf 'kind\tcps\tpass\tok\tfailed\tachieved/s\tsetup p50/p99 ms\tbye p50/p99 ms\tcpu%%\n' >"$OUT/summary.tsv"
log "store=$STORE media=$MEDIA callees=$NCALLEES hold=${HOLD_MS}ms step=${STEP_S}s results in $OUT"
rate_search step
column -t -s$'\t' "$OUT/summary.tsv" >&2
set -- $BEST_LINE
echo "RESULT store=$STORE media=$MEDIA max_passed_cps=$BEST confirmed_cps=$CONFIRMED (auth on, hold ${HOLD_MS} ms, ${STEP_S}s steps, 0 failed, >=95% of rate) setup p50/p99=${2:-NA}/${3:-NA} ms bye p50/p99=${4:-NA}/${5:-NA} ms server_cpu=${6:-NA}% (sori+redis+anchor, % of one core) results=$OUT"
