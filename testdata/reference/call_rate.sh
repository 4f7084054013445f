#!/usr/bin/env bash
# call_rate.sh - highest call rate (calls/s, short calls) sustained for STEP_S seconds with
# < 0.1 % failed calls, through the proxy: sipp UAC -> proxy -> sipp UAS (registered users).
#
# Usage:  ./call_rate.sh [VARIANT]               (local Kamailio anchor, started and stopped here)
#         TARGET=host:port ./call_rate.sh        (any other proxy; nothing started locally)
# VARIANT: mem (default) | mem-rtpe | redis | redis-rtpe, each also with -auth (mem-rtpe-auth ...):
#   -auth  every initial INVITE is digest-challenged (WITH_AUTH_INVITE, sipp/uac_auth.xml), as sori
#          does; added in sori's copy of the harness for a like-for-like comparison
#   mem    usrloc in memory,   redis  usrloc in Redis (db_redis, db_mode 3: lookup hits Redis)
#   -rtpe  media anchoring: rtpengine_offer / answer / delete per call (rtpengine started here)
# Flow per call: INVITE (SDP offer Opus/111) -> 100/180/200 (SDP) -> ACK -> hold HOLD_MS -> BYE -> 200.
# Callees: NCALLEES users registered first (digest auth, reg_auth.xml) with Contact = the UAS.
# After the search: a confirmation step at the best rate (CONFIRM=1) and a step at the fixed
# reference rate REF_RATE (200 cps; same load for every server compared), both capturing SIP on
# lo for PCAP_S (4) seconds to derive wire-level proxy latencies (microseconds).
# HOLD_MS is 200 ms by default: with rtpengine every call holds 4 relay ports and the port plan
# gives 5000, so longer holds make the port range, not the CPU, the limit (1 s hold: ~1000 cps).
# Environment: NCALLEES (1000) HOLD_MS (200) STEP_S (20) START_RATE (100) MAX_RATE (8000)
#   BUDGET_S (210) REF_RATE (200; 0 = skip) KAM_CHILDREN (4) SIP_DOMAIN (127.0.0.1) CONFIRM (1) PCAP_S (4)
#   SRV_PIDS (external mode: PIDs whose CPU to report, comma separated)
#   AUTH (external mode: 1 = register the callees with digest auth (default), 0 = without)
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

VARIANT=${1:-${VARIANT:-mem}}
TARGET=${TARGET:-}
NCALLEES=${NCALLEES:-1000}
HOLD_MS=${HOLD_MS:-200}
STEP_S=${STEP_S:-20}
START_RATE=${START_RATE:-100}
MAX_RATE=${MAX_RATE:-8000}
BUDGET_S=${BUDGET_S:-210}
REF_RATE=${REF_RATE:-200}

[ -n "$TARGET" ] && VARIANT=external
case "$VARIANT" in mem | mem-rtpe | redis | redis-rtpe | mem-auth | mem-rtpe-auth | redis-auth | redis-rtpe-auth | external) ;; *) echo "unknown variant $VARIANT" >&2; exit 1 ;; esac
UAC_SCEN="$HERE/sipp/uac.xml"

anch_init "call_rate-$VARIANT"
build_tools siplat
USERS_DIR=$RUN_DIR/users
gen_users "$NCALLEES" "$USERS_DIR"
awk -F';' 'NR==1{print "SEQUENTIAL"; next} {print $1}' "$USERS_DIR/users.csv" >"$USERS_DIR/callees.csv"

if [ "$VARIANT" != external ]; then
	defs=(WITH_AUTH_DB)
	SRV_PIDS=""
	if [[ "$VARIANT" == redis* ]]; then
		start_redis
		redis_cli HSET version:entry::location table_name location table_version 9 >/dev/null
		defs+=(WITH_REDIS_UL)
		SRV_PIDS="${ANCH_PIDS[-1]},"
	fi
	if [[ "$VARIANT" == *-auth ]]; then
		defs+=(WITH_AUTH_INVITE)
		UAC_SCEN="$HERE/sipp/uac_auth.xml"
	fi
	if [[ "$VARIANT" == *-rtpe || "$VARIANT" == *-rtpe-auth ]]; then
		start_rtpengine
		defs+=(WITH_RTPENGINE)
		SRV_PIDS="$SRV_PIDS$RTPE_PID,"
	fi
	start_kamailio "${defs[@]}"
	SRV_PIDS="$SRV_PIDS$KAM_PID"
	TARGET="$SIP_HOST:$SIP_PORT"
	log "kamailio defines: ${defs[*]} children=$KAM_CHILDREN"
else
	SRV_PIDS=${SRV_PIDS:--}
	SRV_PIDS=${SRV_PIDS// /,}
fi
{
	echo "date: $(date -Is)  host: $(hostname)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "variant: $VARIANT target: $TARGET callees: $NCALLEES hold: ${HOLD_MS}ms step: ${STEP_S}s"
} >"$RUN_DIR/info.txt"

# 1. register the callees, Contact = the UAS
mkdir -p "$RUN_DIR/register-callees"
REG_SCEN="$HERE/sipp/reg_auth.xml"
[ "${AUTH:-1}" = 0 ] && REG_SCEN="$HERE/sipp/reg_noauth.xml" # external server without auth
(cd "$RUN_DIR/register-callees" && timeout 120 sipp "$TARGET" -sf "$REG_SCEN" -inf "$USERS_DIR/users.csv" \
	-key domain "$SIP_DOMAIN" -key contact "127.0.0.1:$UAS_PORT" -key expires 3600 \
	-i 127.0.0.1 -p "$REGUAS_PORT" -mp "$REG_MEDIA_PORT" -m "$NCALLEES" -r 500 -nostdin \
	-trace_stat -stf stat.csv -fd 1 -recv_timeout 5000 -timeout 100s >sipp.out 2>&1)
REG_OK=$(stat_col "$RUN_DIR/register-callees/stat.csv" 'SuccessfulCall(C)')
log "registered callees: $REG_OK/$NCALLEES"
[ "$REG_OK" = "$NCALLEES" ] || { echo "callee registration failed" >&2; exit 4; }

# 2. the UAS (answers every INVITE for any registered user)
mkdir -p "$RUN_DIR/uas"
(cd "$RUN_DIR/uas" && exec sipp -sf "$HERE/sipp/uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -mp "$UAS_MEDIA_PORT" \
	-nostdin -trace_stat -stf stat.csv -fd 5 -trace_err -buff_size 4194304 >sipp.out 2>&1) &
anch_track $! sipp-uas
UAS_PID=$!
sleep 1
kill -0 "$UAS_PID" 2>/dev/null || { echo "UAS did not start" >&2; cat "$RUN_DIR/uas/sipp.out" >&2; exit 4; }
EXTRA_PIDS=$UAS_PID
STEP_TAIL_S=$(awk -v h="$HOLD_MS" 'BEGIN{printf "%.3f", h/1000}')

SUMMARY="$RUN_DIR/summary.tsv"
printf 'kind\tcps\tcalls\tok\tfail\tretrans\tudp_drops\tachieved/s\tsetup_p50\tsetup_p99\tbye_p50\tbye_p99\tsrv_cpu%%\tuac_cpu%%\tuas_cpu%%\tpass\n' >"$SUMMARY"

call_step() {
	local r=$1 kind=${2:-search} d
	d="$RUN_DIR/step-$(printf %05d "$r")"
	[ "$kind" != search ] && d="$d-$kind"
	[ -e "$d" ] && d="$d-$(date +%s)"
	LAST_STEP_DIR=$d
	sipp_step "$d" "$r" "$STEP_S" "$SRV_PIDS" -- "$TARGET" -sf "$UAC_SCEN" -inf "$USERS_DIR/callees.csv" \
		-key domain "$SIP_DOMAIN" -d "$HOLD_MS" -i 127.0.0.1 -p "$UAC_PORT" -mp "$UAC_MEDIA_PORT"
	# shellcheck disable=SC1091
	source "$d/step.env"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$RATE" "$M" "$OK" "$FAIL" "$RETRANS" \
		"$UDP_DROPS" "$ACH" "$P50_1" "$P99_1" "$P50_2" "$P99_2" "$SRV_CPU" "$GEN_CPU" "$EXTRA_CPU" "$PASS" >>"$SUMMARY"
	log "[$kind] cps=$RATE udp_drops=$UDP_DROPS ok=$OK/$M fail=$FAIL retrans=$RETRANS achieved=$ACH/s setup p50/p99=$P50_1/$P99_1 ms bye p50/p99=$P50_2/$P99_2 ms srv_cpu=$SRV_CPU% uac_cpu=$GEN_CPU% uas_cpu=$EXTRA_CPU% pass=$PASS"
	sleep 3
	echo "$PASS"
}

rate_search call_step "$START_RATE" "$MAX_RATE" "$BUDGET_S" $((STEP_S + HOLD_MS / 1000 + 1))

CONFIRM_PASS=""
if [ "$BEST_RATE" != 0 ] && [ "${CONFIRM:-1}" = 1 ]; then
	log "confirmation step at $BEST_RATE cps with SIP capture"
	CONFIRM_PASS=$(PCAP_S=${PCAP_S:-4} call_step "$BEST_RATE" confirm | tail -1)
	CONFIRM_DIR=$(ls -d "$RUN_DIR"/step-*-confirm* | tail -1)
	CONFIRMED_RATE=$BEST_RATE
	if [ "$CONFIRM_PASS" != 1 ]; then
		# not repeatable: confirm the next lower rate that passed in the search (one attempt)
		CONFIRMED_RATE=0
		lower=$(awk -F'\t' -v b="$BEST_RATE" 'NR>1 && $1=="search" && $NF==1 && $2<b && $2>m {m=$2} END{print m+0}' "$SUMMARY")
		if [ "$lower" != 0 ]; then
			log "confirmation failed; confirming $lower cps"
			[ "$(PCAP_S=${PCAP_S:-4} call_step "$lower" confirm | tail -1)" = 1 ] && CONFIRMED_RATE=$lower
			CONFIRM_DIR="$RUN_DIR/step-$(printf %05d "$lower")-confirm"
		fi
	fi
fi
REF_PASS=""
if [ "$REF_RATE" != 0 ]; then
	log "reference step at $REF_RATE cps with SIP capture"
	REF_PASS=$(PCAP_S=${PCAP_S:-4} call_step "$REF_RATE" ref | tail -1)
	REF_DIR=$(ls -d "$RUN_DIR"/step-*-ref* | tail -1)
fi

{
	echo
	echo "RESULT variant=$VARIANT max_sustained_cps=$BEST_RATE (hold ${HOLD_MS} ms, ${STEP_S}s steps, <0.1% failures, >=95% of target achieved)"
	if [ "$BEST_RATE" != 0 ]; then
		awk -F'\t' -v r="$BEST_RATE" 'NR>1 && $1=="search" && $2==r && $16==1 {printf "at %s cps: setup p50=%s p99=%s ms, bye p50=%s p99=%s ms, server cpu=%s%%, uac cpu=%s%%, uas cpu=%s%%, retrans=%s\n", r,$9,$10,$11,$12,$13,$14,$15,$6; exit}' "$SUMMARY"
	fi
	if [ -n "$CONFIRM_PASS" ]; then
		echo "CONFIRMED max (passed twice) = ${CONFIRMED_RATE} cps"
		echo "confirmation run at $BEST_RATE cps: pass=$CONFIRM_PASS; wire-level proxy latency in $(basename "$CONFIRM_DIR") (capture of ${PCAP_S:-4}s):"
		cat "$CONFIRM_DIR/latency.txt" 2>/dev/null
	fi
	if [ -n "$REF_PASS" ]; then
		echo "reference run at $REF_RATE cps: pass=$REF_PASS; wire-level proxy latency (capture of ${PCAP_S:-4}s):"
		cat "$REF_DIR/latency.txt" 2>/dev/null
	fi
} | tee -a "$RUN_DIR/info.txt"
if [[ "$VARIANT" == redis* ]]; then
	# Redis command mix of the whole run (useful to compare round trips per operation)
	redis_cli info commandstats >"$RUN_DIR/redis-commandstats.txt" 2>/dev/null
	redis_cli dbsize >>"$RUN_DIR/redis-commandstats.txt" 2>/dev/null
fi
column -t -s$'\t' "$SUMMARY"
