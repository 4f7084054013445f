#!/usr/bin/env bash
# redis-ops.sh - the Redis commands one REGISTER and one call cost, counted on a Redis Cluster.
#
# Starts its own Redis Cluster (3 masters with a replica each, start_cluster in load-lib.sh),
# sori-anchor and sori (bin/, built by `make redis-ops`) on 127.0.0.1. The subscribers live in
# Redis, as `sori user add` puts them (sori:sub:{NAME} with the MD5 HA1, sori:subs), so a
# REGISTER reads its subscriber there. Then, each a fixed number of SIPp scenarios at a moderate
# rate:
#
#   idle     IDLE_S seconds with no traffic: what sori asks of Redis by itself (bans re-read,
#            slot map), to tell from the rest
#   new      NREG users register for the first time (register.xml: REGISTER -> 401 -> REGISTER
#            with digest -> 200)
#   refresh  the same users register again (new Call-ID, so the binding is replaced)
#   calls    NCALLS calls from other users to those (load-call-uac.xml: INVITE -> 407 -> INVITE
#            with digest -> 180/200 -> ACK -> HOLD_MS -> BYE), every call anchored by sori-anchor
#            (ng offer, answer, delete), answered by one SIPp UAS (call-uas.xml); the call is kept
#            in Redis while up (sip.keep_dialogs), its record added to the stream sori:cdr and
#            the quality map
#
# Around each phase it reads INFO commandstats on every master (replicas only apply the
# masters' writes) and runs MONITOR on each, which shows which commands came from sori and
# which ran inside its Lua scripts. It prints one OPS line per phase: commands per scenario in
# all, sent by sori, run by scripts, the commands by name (calls and usec per scenario), and
# the microseconds Redis spent executing them (commandstats usec, each command once although a
# script's usec holds its commands'; networking not included). The script's own SCAN and
# MEMORY USAGE (sampling the kept calls), INFO and MONITOR, and the replicas' REPLCONF are left
# out. The idle phase's rate is not
# subtracted; it is printed so that it can be. Then a MEMORY line: used_memory added per new
# binding, MEMORY USAGE of a subscriber hash and of a kept call.
#
# Environment: NREG (2000) NCALLS (1000) REG_RATE (200) CALL_RATE (100) HOLD_MS (200)
#              IDLE_S (10) MONITOR (1; 0: no MONITOR, which itself slows Redis: then the usec are
#              cleaner, but which commands ran inside scripts is not known, and the OPS lines
#              give NA for it) OUT (results directory)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=load-lib.sh
source "$HERE/load-lib.sh"
NREG=${NREG:-2000}
NCALLS=${NCALLS:-1000}
REG_RATE=${REG_RATE:-200}
CALL_RATE=${CALL_RATE:-100}
HOLD_MS=${HOLD_MS:-200}
IDLE_S=${IDLE_S:-10}
MONITOR=${MONITOR:-1}
OUT=${OUT:-$(mktemp -d /tmp/sori-redis-ops.XXXXXX)}
SIP_PORT=${SIP_PORT:-5180}
HTTP_PORT=${HTTP_PORT:-9180}
REG_PORT=${REG_PORT:-5181}
UAC_PORT=${UAC_PORT:-5182}
UAS_PORT=${UAS_PORT:-5183}
NG_PORT=${NG_PORT:-5184}
CLUSTER_PORT=${CLUSTER_PORT:-6410}
mkdir -p "$OUT"
# shellcheck disable=SC2046
require_free_ports "$SIP_PORT" "$HTTP_PORT" "$REG_PORT" "$UAC_PORT" "$UAS_PORT" "$NG_PORT" $(cluster_ports "$CLUSTER_PORT")
[ "$NCALLS" -le "$NREG" ] || { echo "NCALLS ($NCALLS) must not exceed NREG ($NREG): each call has its own callee" >&2; exit 2; }

start_cluster "$CLUSTER_PORT" "$OUT"
read -r -a MASTERS <<<"$CLUSTER_MASTERS"
log "cluster up: masters ${MASTERS[*]}, $CLUSTER_URL"

# Subscribers user0000.. (callees first, then the callers), password "pw"+name as users_csv.
nusers=$((NREG + NCALLS))
for i in $(seq 0 $((nusers - 1))); do
	u=$(printf user%04d "$i")
	ha1=$(printf '%s' "$u:sori.test:pw$u" | md5sum)
	echo "HSET sori:sub:{$u} realm sori.test ha1_md5 ${ha1%% *}"
	echo "SADD sori:subs $u"
done | redis-cli -c -p "${MASTERS[0]}" >"$OUT/subscribers.log"
users_csv "$nusers" >"$OUT/users.csv"
head -$((NREG + 1)) "$OUT/users.csv" >"$OUT/callees.csv"
# caller;callee;[authentication ...]: caller user<NREG+i> calls user<i>.
awk -F';' -v n="$NREG" 'NR==1{print "SEQUENTIAL"; next} NR-2<n {callee[NR-2]=$1; next} {print $1 ";" callee[NR-2-n] ";" $3}' \
	"$OUT/users.csv" >"$OUT/calls.csv"

"$ROOT/bin/sori-anchor" -ng "127.0.0.1:$NG_PORT" -rtp-ports 12000-13999 -listen 127.0.0.1 -http "" -log-level warn \
	>"$OUT/sori-anchor.log" 2>&1 &
PIDS+=($!)
media_yaml="media:
  anchors: [\"127.0.0.1:$NG_PORT\"]"
sori_yaml "$CLUSTER_URL" 0 "$media_yaml" >"$OUT/sori.yaml"
start_sori "$OUT/sori.yaml" "$HTTP_PORT" "$OUT/sori.log"

mkdir -p "$OUT/uas"
(cd "$OUT/uas" && exec sipp -sf "$HERE/call-uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin -trace_err \
	-buff_size 4194304 >sipp.out 2>&1) &
PIDS+=($!)

# sipp_fixed DIR COUNT ARGS...: COUNT scenarios; every one must succeed.
sipp_fixed() {
	local d=$1 m=$2 ok failed
	shift 2
	mkdir -p "$d"
	(cd "$d" && timeout 300 sipp "$@" -m "$m" -nostdin -trace_err -trace_stat -stf stat.csv -fd 1 -recv_timeout 5000 \
		-timeout 280s -buff_size 4194304 >sipp.out 2>&1) || true
	ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") k=i; next} {v=$k} END{print v+0}' "$d/stat.csv")
	failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") k=i; next} {v=$k} END{print v+0}' "$d/stat.csv")
	[ "$ok" = "$m" ] && [ "$failed" = 0 ] || { echo "$d: $ok of $m succeeded, $failed failed" >&2; tail -20 "$d/sipp.out" >&2; exit 4; }
}

MON_PIDS=()
monitor_start() {
	local p
	MON_PIDS=()
	[ "$MONITOR" = 1 ] || return 0
	for p in "${MASTERS[@]}"; do
		redis-cli -p "$p" monitor >"$OUT/$1-monitor-$p.log" 2>&1 &
		MON_PIDS+=($!)
	done
	# MONITOR answers OK once it is on: wait for that on each.
	for p in "${MASTERS[@]}"; do
		for _ in $(seq 50); do grep -q '^OK' "$OUT/$1-monitor-$p.log" 2>/dev/null && break; sleep 0.1; done
	done
}
monitor_stop() { local p; for p in "${MON_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

# phase NAME COUNT COMMAND...: runs COMMAND between two commandstats readings and under MONITOR,
# then prints the OPS line, per one of COUNT scenarios.
phase() {
	local name=$1 count=$2 t0 t1
	shift 2
	{ echo "- 0 0"; cmdstats "${MASTERS[@]}"; } >"$OUT/$name-before.txt" # never empty: awk tells the files apart by it
	monitor_start "$name"
	t0=$(date +%s.%N)
	"$@"
	# what the scenarios started in the background (a call's record, its kept state's removal) ends
	sleep 2
	t1=$(date +%s.%N)
	monitor_stop
	cmdstats "${MASTERS[@]}" >"$OUT/$name-after.txt"
	# What ran inside scripts, by command, from MONITOR ("[DB lua]" lines); and the totals.
	[ "$MONITOR" = 1 ] && cat "$OUT/$name"-monitor-*.log | awk '
		$2 ~ /^\[/ && $3 == "lua]" {k = tolower($4); gsub(/"/, "", k); lua[k]++; n++; next}
		$2 ~ /^\[/ && tolower($4) ~ /^"(scan|memory)"$/ {next} # the kept-call sampling below
		$2 ~ /^\[/ {cli++}
		END {printf "- %d %d\n", cli, n; for (k in lua) print k, lua[k]}' >"$OUT/$name-lua.txt"
	[ "$MONITOR" = 1 ] || echo "- NA NA" >"$OUT/$name-lua.txt"
	# Our own INFO readings and MONITOR connections, and the replicas' REPLCONF, are not sori's.
	# A script's usec holds the time of the commands it ran, which count their own usec too: the
	# total takes each command's usec less the share of its calls that ran inside scripts.
	awk -v n="$count" -v name="$name" -v secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" '
		FILENAME ~ /-lua\.txt$/ {if ($1 == "-") {cli = $2; inl = $3} else lua[$1] = $2; next}
		FILENAME ~ /-before\.txt$/ {b[$1] = $2; bu[$1] = $3; next}
		$1 != "info" && $1 != "monitor" && $1 != "replconf" && $1 != "scan" && $1 != "memory|usage" {
			d = $2 - b[$1]; du = $3 - bu[$1]
			if (d > 0) {c[$1] = d; cu[$1] = du; tot += d; ex += du * (1 - (lua[$1] + 0) / d); if ($1 ~ /^eval/) sc += du}
		}
		END {
			line = ""
			for (k in c) line = line sprintf(" %s=%.2f/%.1fus", k, c[k] / n, cu[k] / n)
			f = (cli == "NA") ? "NA" : sprintf("%.2f", cli / n)
			i = (cli == "NA") ? "NA" : sprintf("%.2f", inl / n)
			e = (cli == "NA") ? "NA" : sprintf("%.1f", ex / n)
			printf "OPS phase=%s scenarios=%d seconds=%.1f redis_commands_per_scenario=%.2f from_sori=%s in_scripts=%s redis_exec_us_per_scenario=%s (scripts %.1f) by_command(calls/usec per scenario):%s\n",
				name, n, secs, tot / n, f, i, e, sc / n, line
		}' "$OUT/$name-lua.txt" "$OUT/$name-before.txt" "$OUT/$name-after.txt"
}

idle() { sleep "$IDLE_S"; }
register_all() {
	sipp_fixed "$OUT/$1" "$NREG" "127.0.0.1:$SIP_PORT" -sf "$HERE/register.xml" -inf "$OUT/callees.csv" \
		-key domain sori.test -key contact "127.0.0.1:$UAS_PORT" -key expires 3600 -i 127.0.0.1 -p "$REG_PORT" -r "$REG_RATE"
}
call_all() {
	sipp_fixed "$OUT/calls" "$NCALLS" "127.0.0.1:$SIP_PORT" -sf "$HERE/load-call-uac.xml" -inf "$OUT/calls.csv" \
		-key domain sori.test -d "$HOLD_MS" -i 127.0.0.1 -p "$UAC_PORT" -r "$CALL_RATE" &
	local sipp_pid=$!
	# Half way, a few kept calls' size in Redis (sori:dlg:{CALLID}, JSON).
	sleep $((NCALLS / CALL_RATE / 2 + 1))
	local p k
	for p in "${MASTERS[@]}"; do
		{ redis-cli -p "$p" --scan --pattern 'sori:dlg:*' | grep -v ':end$' | head -10 || true; } | while read -r k; do
			redis-cli -p "$p" memory usage "$k"
		done
	done >"$OUT/dlg-bytes.txt"
	wait "$sipp_pid"
}

used_memory() { local p s=0; for p in "${MASTERS[@]}"; do s=$((s + $(redis-cli -p "$p" info memory | tr -d '\r' | awk -F: '$1=="used_memory"{print $2}'))); done; echo $s; }

phase idle 1 idle
m0=$(used_memory)
phase new "$NREG" register_all new
m1=$(used_memory)
phase refresh "$NREG" register_all refresh
phase calls "$NCALLS" call_all
bindings=$(count_bindings "${MASTERS[@]}")
[ "$bindings" = "$NREG" ] || { echo "the cluster holds $bindings bindings, want $NREG" >&2; exit 4; }
sub=$(redis-cli -c -p "${MASTERS[0]}" memory usage 'sori:sub:{user0000}')
dlg=$(awk '{s+=$1; n++} END{if (n) printf "%.0f (mean of %d)", s/n, n; else print "NA"}' "$OUT/dlg-bytes.txt")
echo "MEMORY bytes_per_binding=$(((m1 - m0) / NREG)) (used_memory of the masters, $NREG bindings) subscriber_hash=$sub kept_call=$dlg (MEMORY USAGE) results=$OUT"
