#!/usr/bin/env bash
# cluster-failover.sh - a Redis Cluster master killed (SIGKILL) under SIPp REGISTER load: the
# replica takes over, no binding is lost, and the only errors are 503 with Retry-After, inside
# the failover window, which it prints.
#
# Starts its own Redis Cluster (3 masters with a replica each, cluster-node-timeout 1000 ms;
# start_cluster in load-lib.sh) and sori (bin/sori, built by `make cluster-failover`) on
# 127.0.0.1 with NUSERS users. Every user registers once (register.xml, digest auth), every
# replica is brought in sync (WAIT), and the index keys are counted on the masters. Then SIPp
# runs register-failover.xml at RATE registrations/s over the same users (each REGISTER may get
# 503, which must carry Retry-After; anything else fails the scenario): after WARM_S seconds the
# master of user0000's slot is killed, another master's cluster_state is polled every 20 ms
# (fail, then ok), and the load goes on AFTER_S seconds past ok. The bindings are counted again.
#
# Prints one FAILOVER line and exits 1 unless: no registration failed, every 503 carried
# Retry-After and came between the kill and 1 s after the cluster was ok again, at least one
# 503 came (the load reached the dead master), and the masters hold NUSERS bindings after as
# before.
#
# Environment: RATE (2000) NUSERS (10000) WARM_S (5) AFTER_S (10) OUT (results directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=load-lib.sh
source "$HERE/load-lib.sh"
RATE=${RATE:-2000}
NUSERS=${NUSERS:-10000}
WARM_S=${WARM_S:-5}
AFTER_S=${AFTER_S:-10}
OUT=${OUT:-$(mktemp -d /tmp/sori-cluster-failover.XXXXXX)}
SIP_PORT=${SIP_PORT:-5190}
HTTP_PORT=${HTTP_PORT:-9190}
SIPP_PORT=${SIPP_PORT:-5191}
CLUSTER_PORT=${CLUSTER_PORT:-6420}
mkdir -p "$OUT"
# shellcheck disable=SC2046
require_free_ports "$SIP_PORT" "$HTTP_PORT" "$SIPP_PORT" $(cluster_ports "$CLUSTER_PORT")

start_cluster "$CLUSTER_PORT" "$OUT"
read -r -a MASTERS <<<"$CLUSTER_MASTERS"
users_csv "$NUSERS" >"$OUT/users.csv"
sori_yaml "$CLUSTER_URL" "$NUSERS" >"$OUT/sori.yaml"
start_sori "$OUT/sori.yaml" "$HTTP_PORT" "$OUT/sori.log"
common=("127.0.0.1:$SIP_PORT" -inf "$OUT/users.csv" -key domain sori.test -key contact 127.0.0.1:5099 -key expires 3600
	-i 127.0.0.1 -p "$SIPP_PORT" -r "$RATE" -l $((RATE * 8 + 200)) -nostdin -recv_timeout 5000 -buff_size 4194304
	-trace_err -trace_stat -stf stat.csv -fd 1)
stat() { awk -F';' -v c="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} {v=$k} END{print v+0}' "$1/stat.csv"; }

# 1. Every user registers once.
mkdir -p "$OUT/register"
(cd "$OUT/register" && timeout 300 sipp "${common[@]}" -sf "$HERE/register.xml" -m "$NUSERS" -timeout 280s >sipp.out 2>&1) || true
[ "$(stat "$OUT/register" 'SuccessfulCall(C)')" = "$NUSERS" ] || { echo "the first registrations failed: see $OUT/register" >&2; exit 4; }
for p in "${MASTERS[@]}"; do redis-cli -p "$p" wait 1 2000 >/dev/null; done
before=$(count_bindings "${MASTERS[@]}")
log "$before bindings on masters ${MASTERS[*]}; load at $RATE/s"

# 2. The load, the kill, the failover.
mkdir -p "$OUT/load"
(cd "$OUT/load" && exec sipp "${common[@]}" -sf "$HERE/register-failover.xml" -m $((RATE * 3600)) -trace_logs \
	-timeout 3500s >sipp.out 2>&1) &
SIPP_PID=$!
PIDS+=($SIPP_PID)
sleep "$WARM_S"
victim=$(master_of_key "$CLUSTER_PORT" 'sori:loc:{user0000@sori.test}')
witness=""
for p in "${MASTERS[@]}"; do [ "$p" != "$victim" ] && witness=$p; done
redis-cli -p "$victim" wait 1 2000 >/dev/null
t_kill=$(date +%s.%N)
kill -KILL "$(cluster_pid "$victim")"
t_fail="" t_ok=""
for _ in $(seq 1500); do
	state=$(redis-cli -p "$witness" cluster info | tr -d '\r' | awk -F: '$1=="cluster_state"{print $2}')
	now=$(date +%s.%N)
	[ -z "$t_fail" ] && [ "$state" = fail ] && t_fail=$now
	[ -n "$t_fail" ] && [ "$state" = ok ] && { t_ok=$now; break; }
	sleep 0.02
done
[ -n "$t_ok" ] || { echo "the cluster did not fail over within 30 s (fail at ${t_fail:-never})" >&2; exit 4; }
log "killed master 127.0.0.1:$victim; cluster_state fail, then ok; load goes on ${AFTER_S}s"
sleep "$AFTER_S"
kill -USR1 "$SIPP_PID" # SIPp: no new calls, finish the others, exit
wait "$SIPP_PID" || true
after=$(count_bindings $(cluster_masters "$CLUSTER_PORT"))

# 3. The verdict.
ok=$(stat "$OUT/load" 'SuccessfulCall(C)')
failed=$(stat "$OUT/load" 'FailedCall(C)')
read -r n503 first last early late bad_ra < <(cat "$OUT"/load/*_logs.log | awk -v k="$t_kill" -v o="$t_ok" '
	$1 == 503 {
		t = $NF + 0; n++
		if (f == "" || t < f) f = t
		if (t > l) l = t
		if (t < k) early++
		if (t > o + 1) late++
		if ($3 !~ /^[0-9]+$/) bad++
	}
	END {printf "%d %.3f %.3f %d %d %d\n", n, f - k, l - k, early, late, bad}')
rel() { awk -v t="$1" -v k="$t_kill" 'BEGIN{printf "+%.3fs", t - k}'; }
verdict=PASS
{ [ "$failed" = 0 ] && [ "$n503" -gt 0 ] && [ "$early" = 0 ] && [ "$late" = 0 ] && [ "$bad_ra" = 0 ] && [ "$before" = "$NUSERS" ] && [ "$after" = "$before" ]; } || verdict=FAIL
echo "FAILOVER $verdict rate=$RATE/s users=$NUSERS killed=127.0.0.1:$victim at +0 cluster_state(127.0.0.1:$witness) fail=$(rel "$t_fail") ok=$(rel "$t_ok") 503s=$n503 (Retry-After on all: $([ "$bad_ra" = 0 ] && echo yes || echo no), first=+${first}s last=+${last}s, before the kill $early, over 1 s after ok $late) registrations_ok=$ok failed=$failed bindings_before=$before after=$after results=$OUT"
[ "$verdict" = PASS ]
