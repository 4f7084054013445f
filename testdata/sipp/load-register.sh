#!/usr/bin/env bash
# load-register.sh - the highest REGISTER rate (digest auth, bindings in Redis) that sori
# sustains for STEP_S seconds with no failed registration, and the response times at it.
#
# Starts its own redis-server and sori (bin/sori, built by `make load-register`) on
# 127.0.0.1, then runs SIPp steps of register.xml: REGISTER -> 401 -> REGISTER with
# Authorization -> 200, over NUSERS users. Steps and the rate search: see load-lib.sh.
#
# TRANSPORT=tcp sends every REGISTER over one SIPp TCP connection (-t t1), as phones keep one
# connection each; TRANSPORT=tls carries that connection over TLS to sori's tls listener (a
# self-signed certificate made in OUT, verified by the client) through stunnel, as Debian's sipp
# is built without TLS. sori knows the tunnel's address as a sip.aliases entry (SIPp computes its
# digest-uri from the address it sends to). The CPU per registration is sori's (and Redis's) CPU
# time divided by the registrations done, at the confirmed rate.
#
# Environment: STEP_S (20) START_RATE (1000) MAX_RATE (64000) BUDGET_S (300) NUSERS (10000)
#              STORE (redis; "memory" for the in-memory store) TRANSPORT (udp; tcp, tls)
#              OUT (results directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=load-lib.sh
source "$HERE/load-lib.sh"
STEP_S=${STEP_S:-20}
START_RATE=${START_RATE:-1000}
MAX_RATE=${MAX_RATE:-64000}
BUDGET_S=${BUDGET_S:-300}
NUSERS=${NUSERS:-10000}
STORE=${STORE:-redis}
TRANSPORT=${TRANSPORT:-udp}
OUT=${OUT:-$(mktemp -d /tmp/sori-load-register.XXXXXX)}
SIP_PORT=${SIP_PORT:-5160}
HTTP_PORT=${HTTP_PORT:-9160}
REDIS_PORT=${REDIS_PORT:-6391}
SIPP_PORT=${SIPP_PORT:-5161}
TLS_PORT=${TLS_PORT:-5162}
TUNNEL_PORT=${TUNNEL_PORT:-5163}
mkdir -p "$OUT"
require_free_ports "$SIP_PORT" "$HTTP_PORT" "$REDIS_PORT" "$SIPP_PORT" "$TLS_PORT" "$TUNNEL_PORT"
target="127.0.0.1:$SIP_PORT" sipp_transport=() sip_extra=""
case "$TRANSPORT" in
udp) ;;
tcp) LISTEN="\"tcp:127.0.0.1:$SIP_PORT\"" sipp_transport=(-t t1) ;;
tls)
	LISTEN="\"tls:127.0.0.1:$TLS_PORT\"" sipp_transport=(-t t1) target="127.0.0.1:$TUNNEL_PORT"
	sip_extra="  aliases: [\"$target\"]
  tls: {cert: \"$OUT/tls/cert.pem\", key: \"$OUT/tls/key.pem\", self_signed: true}"
	;;
*) echo "TRANSPORT=$TRANSPORT: give udp, tcp or tls" >&2; exit 2 ;;
esac

store_url=memory
if [ "$STORE" = redis ]; then
	start_redis "$REDIS_PORT" "$OUT"
	store_url="redis://127.0.0.1:$REDIS_PORT/0"
fi
users_csv "$NUSERS" >"$OUT/users.csv"
sori_yaml "$store_url" "$NUSERS" "" "$sip_extra" >"$OUT/sori.yaml"
start_sori "$OUT/sori.yaml" "$HTTP_PORT" "$OUT/sori.log"
[ "$TRANSPORT" = tls ] && start_stunnel "$target" "127.0.0.1:$TLS_PORT" "$OUT/tls/cert.pem" "$OUT"
SRV_PIDS="$SORI_PID ${REDIS_PID:-}"

# step RATE KIND -> last line "PASS P50_1 P99_1 P50_2 P99_2 CPU"
step() {
	local r=$1 kind=$2 d
	d="$OUT/step-$(printf %05d "$r")-$kind"
	[ -e "$d" ] && d="$d-$(date +%s)"
	sipp_step "$d" "$r" "$SRV_PIDS" "$target" "${sipp_transport[@]}" -sf "$HERE/register.xml" -inf "$OUT/users.csv" \
		-key domain sori.test -key contact 127.0.0.1:5099 -key expires 3600 -i 127.0.0.1 -p "$SIPP_PORT"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$r" "$STEP_PASS" "$STEP_OK/$STEP_M" "$STEP_FAIL" "$STEP_ACH" \
		"${STEP_P1// //}" "${STEP_P2// //}" "$STEP_CPU" >>"$OUT/summary.tsv"
	log "[$kind] rate=$r/s pass=$STEP_PASS ok=$STEP_OK/$STEP_M failed=$STEP_FAIL achieved=$STEP_ACH/s rtd1(401) p50/p99=${STEP_P1// //} ms rtd2(200) p50/p99=${STEP_P2// //} ms server cpu=$STEP_CPU%"
	echo "$STEP_PASS $STEP_P1 $STEP_P2 $STEP_CPU"
	sleep 2
}

printf 'kind\trate\tpass\tok\tfailed\tachieved/s\t401 p50/p99 ms\t200 p50/p99 ms\tcpu%%\n' >"$OUT/summary.tsv"
log "store=$STORE transport=$TRANSPORT users=$NUSERS step=${STEP_S}s results in $OUT"
rate_search step
column -t -s$'\t' "$OUT/summary.tsv" >&2
set -- $BEST_LINE
cpu_us="NA"
[ "$CONFIRMED" != 0 ] && [ -n "${6:-}" ] && cpu_us=$(awk -v c="$6" -v r="$CONFIRMED" 'BEGIN{printf "%.1f", c/100/r*1e6}')
echo "RESULT store=$STORE transport=$TRANSPORT max_passed_per_s=$BEST confirmed_per_s=$CONFIRMED (${STEP_S}s steps, 0 failed, >=95% of rate) 401 p50/p99=${2:-NA}/${3:-NA} ms 200 p50/p99=${4:-NA}/${5:-NA} ms server_cpu=${6:-NA}% (sori+redis, % of one core) cpu_per_register=${cpu_us}us results=$OUT"
