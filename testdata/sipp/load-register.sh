#!/usr/bin/env bash
# load-register.sh - the highest REGISTER rate (digest auth, bindings in Redis) that sori
# sustains for STEP_S seconds with no failed registration, and the response times at it.
#
# Starts its own redis-server and sori (bin/sori, built by `make load-register`) on
# 127.0.0.1, then runs SIPp steps of register.xml: REGISTER -> 401 -> REGISTER with
# Authorization -> 200, over NUSERS users. A step passes when every registration was
# created and succeeded and the achieved rate is >= 95 % of the target. The rate doubles
# from START_RATE until a step fails, then bisects until the gap is <= 12 % or BUDGET_S runs
# out; the best rate is then confirmed by a second step (if that fails, the next lower rate
# that passed is confirmed instead).
#
# Environment: STEP_S (20) START_RATE (1000) MAX_RATE (64000) BUDGET_S (300) NUSERS (10000)
#              STORE (redis; "memory" for the in-memory store) OUT (results directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STEP_S=${STEP_S:-20}
START_RATE=${START_RATE:-1000}
MAX_RATE=${MAX_RATE:-64000}
BUDGET_S=${BUDGET_S:-300}
NUSERS=${NUSERS:-10000}
STORE=${STORE:-redis}
OUT=${OUT:-$(mktemp -d /tmp/sori-load-register.XXXXXX)}
SIP_PORT=${SIP_PORT:-5160}
HTTP_PORT=${HTTP_PORT:-9160}
REDIS_PORT=${REDIS_PORT:-6391}
SIPP_PORT=${SIPP_PORT:-5161}
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for p in "$SIP_PORT" "$HTTP_PORT" "$REDIS_PORT" "$SIPP_PORT"; do
	if ss -Hlnu "sport = :$p" | grep -q . || ss -Hlnt "sport = :$p" | grep -q .; then
		echo "port $p is in use; set SIP_PORT/HTTP_PORT/REDIS_PORT/SIPP_PORT" >&2
		exit 2
	fi
done

store_url=memory
if [ "$STORE" = redis ]; then
	redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$OUT" \
		--logfile "$OUT/redis.log" --daemonize no >/dev/null 2>&1 &
	PIDS+=($!)
	REDIS_PID=$!
	for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
	store_url="redis://127.0.0.1:$REDIS_PORT/0"
fi

# Users user0000.. with password "pw"+user, as the reference bench scripts use.
awk -v n="$NUSERS" 'BEGIN{print "SEQUENTIAL"; for(i=0;i<n;i++){u=sprintf("user%04d",i); print u ";pw" u ";[authentication username=" u " password=pw" u "]"}}' >"$OUT/users.csv"
{
	cat <<EOF
sip:
  domain: sori.test
  listen: ["udp:127.0.0.1:$SIP_PORT"]
  auth_secret: load-test-secret-0123456789
registrar:
  store: "$store_url"
  store_timeout: 2s
http:
  listen: 127.0.0.1:$HTTP_PORT
  pprof: true
log:
  level: warn
users:
EOF
	awk -v n="$NUSERS" 'BEGIN{for(i=0;i<n;i++){u=sprintf("user%04d",i); print "  - {name: " u ", password: pw" u "}"}}'
} >"$OUT/sori.yaml"

"$ROOT/bin/sori" -config "$OUT/sori.yaml" >"$OUT/sori.log" 2>&1 &
PIDS+=($!)
SORI_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null || { cat "$OUT/sori.log" >&2; exit 3; }
SRV_PIDS="$SORI_PID ${REDIS_PID:-}"

ticks() { local t=0 p v; for p in $1; do v=$(awk '{s=$0; sub(/.*\) /,"",s); split(s,f," "); print f[12]+f[13]}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }
HZ=$(getconf CLK_TCK)

# step RATE KIND -> prints "PASS OK FAIL ACHIEVED P50_1 P99_1 P50_2 P99_2 CPU" and returns 0
step() {
	local r=$1 kind=$2 d m k0 k1 t0 t1
	d="$OUT/step-$(printf %05d "$r")-$kind"
	mkdir -p "$d"
	m=$((r * STEP_S))
	k0=$(ticks "$SRV_PIDS")
	t0=$(date +%s.%N)
	(cd "$d" && timeout -k 5 $((STEP_S + 40)) sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/register.xml" -inf "$OUT/users.csv" \
		-key domain sori.test -key contact 127.0.0.1:5099 -key expires 3600 -i 127.0.0.1 -p "$SIPP_PORT" \
		-r "$r" -rp 1000 -m "$m" -l $((r * 4 + 200)) -nostdin -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 100 \
		-recv_timeout 5000 -timeout $((STEP_S + 30))s -buff_size 4194304 >sipp.out 2>&1) || true
	t1=$(date +%s.%N)
	k1=$(ticks "$SRV_PIDS")
	local col ok fail created rtt ach p1 p2 cpu pass
	col() { awk -F';' -v c="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} {v=$k} END{print v+0}' "$d/stat.csv"; }
	ok=$(col 'SuccessfulCall(C)'); fail=$(col 'FailedCall(C)'); created=$(col 'OutgoingCall(C)')
	rtt=$(ls "$d"/*_rtt.csv 2>/dev/null | head -1)
	ach=$(awk -F';' 'NR>1 && $3==1 {n++; if ($1+0 > mx) mx=$1+0} END{if (mx>0) printf "%.0f", n/(mx/1000); else print 0}' "$rtt")
	pct() { awk -F';' -v r="$1" 'NR>1 && $3==r {print $2}' "$rtt" | sort -g | awk '{a[NR]=$1} END{if(NR==0){print "NA NA"; exit} i=int(NR*0.5); if(i<1)i=1; j=int(NR*0.99+0.999999); if(j>NR)j=NR; printf "%s %s\n", a[i], a[j]}'; }
	p1=$(pct 1); p2=$(pct 2)
	cpu=$(awk -v d=$((k1 - k0)) -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", 100*d/hz/(b-a)}')
	pass=$(awk -v ok="$ok" -v f="$fail" -v m="$m" -v c="$created" -v a="$ach" -v r="$r" 'BEGIN{print (c>=m && f==0 && ok>=m && a>=0.95*r) ? 1 : 0}')
	gzip -1 -f "$rtt" 2>/dev/null || true
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$r" "$pass" "$ok/$m" "$fail" "$ach" "${p1// /\/}" "${p2// /\/}" >>"$OUT/summary.tsv"
	log "[$kind] rate=$r/s pass=$pass ok=$ok/$m failed=$fail achieved=$ach/s rtd1(401) p50/p99=${p1// //} ms rtd2(200) p50/p99=${p2// //} ms server cpu=$cpu%"
	echo "$pass $p1 $p2 $cpu"
	sleep 2
}

printf 'kind\trate\tpass\tok\tfailed\tachieved/s\t401 p50/p99 ms\t200 p50/p99 ms\n' >"$OUT/summary.tsv"
log "store=$STORE users=$NUSERS step=${STEP_S}s results in $OUT"
start=$(date +%s)
r=$START_RATE lo=0 hi=0 best=0 best_line=""
while :; do
	[ $(($(date +%s) - start + STEP_S + 10)) -gt "$BUDGET_S" ] && { log "time budget reached"; break; }
	line=$(step "$r" search)
	if [ "${line%% *}" = 1 ]; then lo=$r; best=$r; best_line=$line; [ "$hi" = 0 ] && [ "$r" -ge "$MAX_RATE" ] && break
	else hi=$r; fi
	if [ "$hi" = 0 ]; then r=$((r * 2)); [ "$r" -gt "$MAX_RATE" ] && r=$MAX_RATE
	else
		[ "$lo" = 0 ] && { r=$((hi / 2)); [ "$r" -lt 50 ] && break; continue; }
		[ $((hi * 100 / lo)) -le 112 ] && break
		r=$(((lo + hi) / 2)); r=$((r / 50 * 50))
		{ [ "$r" -le "$lo" ] || [ "$r" -ge "$hi" ]; } && break
	fi
done
confirmed=0
if [ "$best" != 0 ]; then
	line=$(step "$best" confirm)
	if [ "${line%% *}" = 1 ]; then
		confirmed=$best
		best_line=$line
	else
		# Not repeatable: confirm the next lower rate that passed (one attempt).
		lower=$(awk -F'\t' -v b="$best" 'NR>1 && $1=="search" && $3==1 && $2<b && $2>m {m=$2} END{print m+0}' "$OUT/summary.tsv")
		if [ "$lower" != 0 ]; then
			line=$(step "$lower" confirm)
			[ "${line%% *}" = 1 ] && { confirmed=$lower; best_line=$line; }
		fi
	fi
fi
column -t -s$'\t' "$OUT/summary.tsv" >&2
set -- $best_line
echo "RESULT store=$STORE max_passed_per_s=$best confirmed_per_s=$confirmed (${STEP_S}s steps, 0 failed, >=95% of rate) 401 p50/p99=$2/$3 ms 200 p50/p99=$4/$5 ms server_cpu=$6% (sori+redis, % of one core) results=$OUT"
