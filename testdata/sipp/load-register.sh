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
SIPP2_PORT=${SIPP2_PORT:-5164}
CLUSTER_PORT=${CLUSTER_PORT:-6400}
NODES=${NODES:-1}
mkdir -p "$OUT"
cports=""
[ "$STORE" = redis-cluster ] && cports=$(cluster_ports "$CLUSTER_PORT")
# shellcheck disable=SC2086
require_free_ports "$SIP_PORT" "$HTTP_PORT" "$REDIS_PORT" "$SIPP_PORT" "$TLS_PORT" "$TUNNEL_PORT" $cports
case "$NODES" in
1) ;;
2)
	[ "$TRANSPORT" = udp ] || { echo "NODES=2 runs over UDP only" >&2; exit 2; }
	[ "$STORE" = memory ] && { echo "NODES=2 needs a shared store: STORE=redis or redis-cluster" >&2; exit 2; }
	require_free_ports "$SIPP2_PORT" $((HTTP_PORT + 1))
	;;
*) echo "NODES=$NODES: give 1 or 2" >&2; exit 2 ;;
esac
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

store_url=memory REDIS_PIDS=""
case "$STORE" in
memory) ;;
redis)
	start_redis "$REDIS_PORT" "$OUT"
	store_url="redis://127.0.0.1:$REDIS_PORT/0" REDIS_PIDS=$REDIS_PID
	;;
redis-cluster)
	start_cluster "$CLUSTER_PORT" "$OUT"
	store_url=$CLUSTER_URL REDIS_PIDS=$(for e in $CLUSTER_PIDS; do printf '%s ' "${e#*:}"; done)
	;;
*) echo "STORE=$STORE: give redis, redis-cluster or memory" >&2; exit 2 ;;
esac
users_csv "$NUSERS" >"$OUT/users.csv"
sori_yaml "$store_url" "$NUSERS" "" "$sip_extra" >"$OUT/sori.yaml"
start_sori "$OUT/sori.yaml" "$HTTP_PORT" "$OUT/sori.log"
SORI_PIDS=$SORI_PID
targets=("$target")
if [ "$NODES" = 2 ]; then
	# The second node: same users and store, SIP on 127.0.0.2, HTTP on the next port. Each SIPp
	# instance registers its own half of the users.
	LISTEN="\"udp:127.0.0.2:$SIP_PORT\"" HTTP_PORT=$((HTTP_PORT + 1)) sori_yaml "$store_url" "$NUSERS" "" "$sip_extra" >"$OUT/sori-2.yaml"
	start_sori "$OUT/sori-2.yaml" $((HTTP_PORT + 1)) "$OUT/sori-2.log"
	SORI_PIDS="$SORI_PIDS $SORI_PID"
	targets+=("127.0.0.2:$SIP_PORT")
	half=$((NUSERS / 2))
	{ echo SEQUENTIAL; sed -n "2,$((half + 1))p" "$OUT/users.csv"; } >"$OUT/users-1.csv"
	{ echo SEQUENTIAL; sed -n "$((half + 2)),\$p" "$OUT/users.csv"; } >"$OUT/users-2.csv"
fi
[ "$TRANSPORT" = tls ] && start_stunnel "$target" "127.0.0.1:$TLS_PORT" "$OUT/tls/cert.pem" "$OUT"
SRV_PIDS="$SORI_PIDS $REDIS_PIDS"

# sipp_register DIR RATE TARGET CSV LOCAL_PORT: one sipp_step of register.xml.
sipp_register() {
	sipp_step "$1" "$2" "$SRV_PIDS" "$3" "${sipp_transport[@]}" -sf "$HERE/register.xml" -inf "$4" \
		-key domain sori.test -key contact 127.0.0.1:5099 -key expires 3600 -i 127.0.0.1 -p "$5"
}

# step RATE KIND -> last line "PASS P50_1 P99_1 P50_2 P99_2 CPU SORI_CPU REDIS_CPU" (with NODES=2,
# the percentiles of the first node's SIPp instance)
step() {
	local r=$1 kind=$2 d ks0 ks1 kr0 kr1 t0 t1 sori_cpu redis_cpu i w=()
	local p1=0 ok1=0 m1=0 f1=0 a1=0 q11=NA/NA q21=NA/NA p2=0 ok2=0 m2=0 f2=0 a2=0
	d="$OUT/step-$(printf %05d "$r")-$kind"
	[ -e "$d" ] && d="$d-$(date +%s)"
	ks0=$(ticks "$SORI_PIDS") kr0=$(ticks "$REDIS_PIDS") t0=$(date +%s.%N)
	if [ "$NODES" = 1 ]; then
		sipp_register "$d" "$r" "$target" "$OUT/users.csv" "$SIPP_PORT"
	else
		# Two instances at once, half the rate each; each writes what sipp_step set.
		for i in 1 2; do
			(
				port=$SIPP_PORT
				[ "$i" = 2 ] && port=$SIPP2_PORT
				sipp_register "$d/node-$i" $((r / 2)) "${targets[$((i - 1))]}" "$OUT/users-$i.csv" "$port"
				echo "$STEP_PASS $STEP_OK $STEP_M $STEP_FAIL $STEP_ACH ${STEP_P1// //} ${STEP_P2// //}" >"$d/node-$i.result"
			) &
			w+=($!)
		done
		wait "${w[@]}" || true
		[ -s "$d/node-1.result" ] && read -r p1 ok1 m1 f1 a1 q11 q21 <"$d/node-1.result"
		[ -s "$d/node-2.result" ] && read -r p2 ok2 m2 f2 a2 _ _ <"$d/node-2.result"
		STEP_PASS=$((p1 * p2)) STEP_OK=$((ok1 + ok2)) STEP_M=$((m1 + m2)) STEP_FAIL=$((f1 + f2)) STEP_ACH=$((a1 + a2))
		STEP_P1=${q11//\// } STEP_P2=${q21//\// }
		log "[$kind] per node: 1 ok=$ok1/$m1 failed=$f1 achieved=$a1/s; 2 ok=$ok2/$m2 failed=$f2 achieved=$a2/s"
	fi
	ks1=$(ticks "$SORI_PIDS") kr1=$(ticks "$REDIS_PIDS") t1=$(date +%s.%N)
	sori_cpu=$(awk -v d=$((ks1 - ks0)) -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", 100*d/hz/(b-a)}')
	redis_cpu=$(awk -v d=$((kr1 - kr0)) -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", 100*d/hz/(b-a)}')
	STEP_CPU=$((sori_cpu + redis_cpu))
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$r" "$STEP_PASS" "$STEP_OK/$STEP_M" "$STEP_FAIL" "$STEP_ACH" \
		"${STEP_P1// //}" "${STEP_P2// //}" "$STEP_CPU" "$sori_cpu" "$redis_cpu" >>"$OUT/summary.tsv"
	log "[$kind] rate=$r/s pass=$STEP_PASS ok=$STEP_OK/$STEP_M failed=$STEP_FAIL achieved=$STEP_ACH/s rtd1(401) p50/p99=${STEP_P1// //} ms rtd2(200) p50/p99=${STEP_P2// //} ms server cpu=$STEP_CPU% (sori $sori_cpu%, redis $redis_cpu%)"
	echo "$STEP_PASS $STEP_P1 $STEP_P2 $STEP_CPU $sori_cpu $redis_cpu"
	sleep 2
}

printf 'kind\trate\tpass\tok\tfailed\tachieved/s\t401 p50/p99 ms\t200 p50/p99 ms\tcpu%%\tsori%%\tredis%%\n' >"$OUT/summary.tsv"
log "store=$STORE transport=$TRANSPORT nodes=$NODES users=$NUSERS step=${STEP_S}s results in $OUT"
rate_search step
column -t -s$'\t' "$OUT/summary.tsv" >&2
set -- $BEST_LINE
cpu_us="NA" sori_us="NA" redis_us="NA"
if [ "$CONFIRMED" != 0 ] && [ -n "${6:-}" ]; then
	cpu_us=$(awk -v c="$6" -v r="$CONFIRMED" 'BEGIN{printf "%.1f", c/100/r*1e6}')
	sori_us=$(awk -v c="${7:-0}" -v r="$CONFIRMED" 'BEGIN{printf "%.1f", c/100/r*1e6}')
	redis_us=$(awk -v c="${8:-0}" -v r="$CONFIRMED" 'BEGIN{printf "%.1f", c/100/r*1e6}')
fi
echo "RESULT store=$STORE transport=$TRANSPORT nodes=$NODES max_passed_per_s=$BEST confirmed_per_s=$CONFIRMED (${STEP_S}s steps, 0 failed, >=95% of rate; all nodes together) 401 p50/p99=${2:-NA}/${3:-NA} ms 200 p50/p99=${4:-NA}/${5:-NA} ms server_cpu=${6:-NA}% (sori ${7:-NA}% + redis ${8:-NA}%, % of one core) cpu_per_register=${cpu_us}us (sori ${sori_us}us + redis ${redis_us}us) results=$OUT"
