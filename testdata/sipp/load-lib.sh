# load-lib.sh - what the load scripts share: their own redis-server and sori on 127.0.0.1,
# one SIPp step at a fixed rate judged strictly, and the rate search. Sourced, not run.
#
# A step runs STEP_S seconds of SIPp at rate R (R*STEP_S scenarios). It passes when every
# scenario was created and succeeded (zero failures) and the achieved rate (scenarios that got
# their first rtd divided by the time of the last one) is >= 95 % of R. The search doubles R
# from START_RATE until a step fails, then bisects until the gap is <= 12 % or BUDGET_S runs
# out; the best rate is then confirmed by a second step (if that fails, the next lower rate
# that passed is confirmed instead).

PIDS=()
load_cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap load_cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
HZ=$(getconf CLK_TCK)

# require_free_ports PORT... exits 2 when one is bound (UDP or TCP).
require_free_ports() {
	local p
	for p in "$@"; do
		if ss -Hlnu "sport = :$p" | grep -q . || ss -Hlnt "sport = :$p" | grep -q .; then
			echo "port $p is in use; set the *_PORT variables" >&2
			exit 2
		fi
	done
}

# start_redis PORT DIR: a throw-away redis-server; sets REDIS_PID.
start_redis() {
	redis-server --bind 127.0.0.1 --port "$1" --save "" --appendonly no --dir "$2" \
		--logfile "$2/redis.log" --daemonize no >/dev/null 2>&1 &
	PIDS+=($!)
	REDIS_PID=$!
	for _ in $(seq 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "redis-server did not start on $1" >&2
	exit 3
}

# start_sori CONFIG HTTP_PORT LOG: bin/sori on CONFIG, waits for /healthz; sets SORI_PID.
start_sori() {
	"$ROOT/bin/sori" -config "$1" >"$3" 2>&1 &
	PIDS+=($!)
	SORI_PID=$!
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
	cat "$3" >&2
	exit 3
}

# sori_yaml STORE_URL NUSERS [EXTRA_YAML [SIP_YAML]]: a sori configuration on SIP_PORT/HTTP_PORT
# (LISTEN, when set, replaces the listener list: quoted "transport:ip:port" items, comma separated)
# with users user0000.. (see users_yaml), EXTRA_YAML (top-level keys) before them, SIP_YAML
# (more "sip:" keys, indented two spaces) in the sip section.
sori_yaml() {
	cat <<YAML
sip:
  domain: sori.test
  listen: [${LISTEN:-"\"udp:127.0.0.1:$SIP_PORT\""}]
  auth_secret: load-test-secret-0123456789
${4:-}
registrar:
  store: "$1"
  store_timeout: 2s
http:
  listen: 127.0.0.1:$HTTP_PORT
  pprof: true
log:
  level: warn
security:
  trusted: ["127.0.0.1/32"]   # the load generator: one source sending far over any per-source limit
${3:-}
users:
YAML
	users_yaml "$2"
}

# start_stunnel ACCEPT CONNECT CAFILE DIR: a TLS client tunnel (stunnel4) from ACCEPT to sori's tls
# listener at CONNECT, trusting only CAFILE for sori.test: Debian's sipp has no TLS, so SIPp's TCP
# connection is carried over TLS by it. Sets STUNNEL_PID.
start_stunnel() {
	cat >"$4/stunnel.conf" <<CONF
foreground = yes
pid =
debug = warning
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[sips]
client = yes
accept = $1
connect = $2
CAfile = $3
verifyChain = yes
checkHost = sori.test
sslVersionMin = TLSv1.2
CONF
	stunnel4 "$4/stunnel.conf" >"$4/stunnel.log" 2>&1 &
	PIDS+=($!)
	STUNNEL_PID=$!
	for _ in $(seq 50); do (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0; sleep 0.1; done
	cat "$4/stunnel.log" >&2
	exit 3
}

# users_yaml N: the "users:" entries user0000.. with password "pw"+user, as the reference
# bench scripts use.
users_yaml() { awk -v n="$1" 'BEGIN{for(i=0;i<n;i++){u=sprintf("user%04d",i); print "  - {name: " u ", password: pw" u "}"}}'; }

# users_csv N: SIPp injection file "user;password;[authentication ...]" for the same users.
users_csv() { awk -v n="$1" 'BEGIN{print "SEQUENTIAL"; for(i=0;i<n;i++){u=sprintf("user%04d",i); print u ";pw" u ";[authentication username=" u " password=pw" u "]"}}'; }

# ticks "PID...": user+system CPU clock ticks of those processes.
ticks() { local t=0 p v; for p in $1; do v=$(awk '{s=$0; sub(/.*\) /,"",s); split(s,f," "); print f[12]+f[13]}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }

# sipp_step DIR RATE "SRV_PIDS" SIPP_ARGS...: one step of STEP_S seconds. Sets STEP_PASS,
# STEP_OK, STEP_FAIL, STEP_M, STEP_ACH, STEP_P1 / STEP_P2 ("p50 p99" ms of rtd 1 and 2) and
# STEP_CPU (% of one core of SRV_PIDS).
sipp_step() {
	local d=$1 r=$2 srv=$3 k0 k1 t0 t1 created rtt
	shift 3
	mkdir -p "$d"
	STEP_M=$((r * STEP_S))
	k0=$(ticks "$srv")
	t0=$(date +%s.%N)
	(cd "$d" && timeout -k 5 $((STEP_S + 60)) sipp "$@" -r "$r" -rp 1000 -m "$STEP_M" -l $((r * 8 + 200)) \
		-nostdin -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 100 -recv_timeout 5000 \
		-timeout $((STEP_S + 50))s -buff_size 4194304 >sipp.out 2>&1) || true
	t1=$(date +%s.%N)
	k1=$(ticks "$srv")
	col() { awk -F';' -v c="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} {v=$k} END{print v+0}' "$d/stat.csv" 2>/dev/null || echo 0; }
	STEP_OK=$(col 'SuccessfulCall(C)')
	STEP_FAIL=$(col 'FailedCall(C)')
	created=$(col 'OutgoingCall(C)')
	rtt=$(ls "$d"/*_rtt.csv 2>/dev/null | head -1 || true)
	STEP_ACH=0 STEP_P1="NA NA" STEP_P2="NA NA"
	if [ -n "$rtt" ]; then
		STEP_ACH=$(awk -F';' 'NR>1 && $3==1 {n++; if ($1+0 > mx) mx=$1+0} END{if (mx>0) printf "%.0f", n/(mx/1000); else print 0}' "$rtt")
		pct() { awk -F';' -v r="$1" 'NR>1 && $3==r {print $2}' "$rtt" | sort -g | awk '{a[NR]=$1} END{if(NR==0){print "NA NA"; exit} i=int(NR*0.5); if(i<1)i=1; j=int(NR*0.99+0.999999); if(j>NR)j=NR; printf "%s %s\n", a[i], a[j]}'; }
		STEP_P1=$(pct 1)
		STEP_P2=$(pct 2)
		gzip -1 -f "$rtt" 2>/dev/null || true
	fi
	STEP_CPU=$(awk -v d=$((k1 - k0)) -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", 100*d/hz/(b-a)}')
	STEP_PASS=$(awk -v ok="$STEP_OK" -v f="$STEP_FAIL" -v m="$STEP_M" -v c="$created" -v a="$STEP_ACH" -v r="$r" \
		'BEGIN{print (c>=m && f==0 && ok>=m && a>=0.95*r) ? 1 : 0}')
}

# rate_search STEP_FN: STEP_FN RATE KIND runs one step and prints "PASS rest-of-line" as its
# last line. Sets BEST (highest passing rate), CONFIRMED (rate that passed twice, 0 if none)
# and BEST_LINE (the confirmed step's line, else the best search step's).
rate_search() {
	local fn=$1 start r lo=0 hi=0 line lower
	start=$(date +%s)
	r=$START_RATE BEST=0 BEST_LINE="" CONFIRMED=0
	while :; do
		[ $(($(date +%s) - start + STEP_S + 10)) -gt "$BUDGET_S" ] && { log "time budget reached"; break; }
		line=$("$fn" "$r" search | tail -1)
		if [ "${line%% *}" = 1 ]; then
			lo=$r BEST=$r BEST_LINE=$line
			[ "$hi" = 0 ] && [ "$r" -ge "$MAX_RATE" ] && break
		else hi=$r; fi
		if [ "$hi" = 0 ]; then
			r=$((r * 2))
			[ "$r" -gt "$MAX_RATE" ] && r=$MAX_RATE
		else
			[ "$lo" = 0 ] && { r=$((hi / 2)); [ "$r" -lt 10 ] && break; continue; }
			[ $((hi * 100 / lo)) -le 112 ] && break
			r=$(((lo + hi) / 2))
			[ "$r" -ge 100 ] && r=$((r / 50 * 50))
			{ [ "$r" -le "$lo" ] || [ "$r" -ge "$hi" ]; } && break
		fi
	done
	[ "$BEST" = 0 ] && return 0
	line=$("$fn" "$BEST" confirm | tail -1)
	if [ "${line%% *}" = 1 ]; then
		CONFIRMED=$BEST BEST_LINE=$line
		return 0
	fi
	lower=$(awk -F'\t' -v b="$BEST" 'NR>1 && $1=="search" && $3==1 && $2<b && $2>m {m=$2} END{print m+0}' "$OUT/summary.tsv")
	[ "$lower" = 0 ] && return 0
	line=$("$fn" "$lower" confirm | tail -1)
	[ "${line%% *}" = 1 ] && { CONFIRMED=$lower BEST_LINE=$line; }
	return 0
}

# cluster_ports BASE: the six ports of start_cluster and their cluster bus ports (+10000), for
# require_free_ports.
cluster_ports() { local i; for i in 0 1 2 3 4 5; do echo $(($1 + i)) $(($1 + i + 10000)); done; }

# start_cluster BASE DIR: a throw-away Redis Cluster of 3 masters with a replica each on
# 127.0.0.1:BASE..BASE+5, as redistest.StartClusterWithReplicas makes it (cluster-node-timeout
# CLUSTER_NODE_TIMEOUT_MS, 1000), once every node reports cluster_state:ok, knows the 6 nodes and
# every replica is in sync. Sets CLUSTER_PIDS (port:pid ...), CLUSTER_MASTERS (their ports) and
# CLUSTER_URL (redis-cluster://MASTER,MASTER,MASTER).
start_cluster() {
	local base=$1 dir=$2 i p addrs="" ok
	CLUSTER_PIDS=""
	for i in 0 1 2 3 4 5; do
		p=$((base + i))
		mkdir -p "$dir/redis-$p"
		redis-server --bind 127.0.0.1 --port "$p" --cluster-enabled yes --cluster-config-file "$dir/redis-$p/nodes.conf" \
			--cluster-node-timeout "${CLUSTER_NODE_TIMEOUT_MS:-1000}" --save "" --appendonly no --dir "$dir/redis-$p" \
			--repl-diskless-sync-delay 0 --cluster-replica-validity-factor 0 --logfile "$dir/redis-$p/redis.log" \
			--daemonize no >/dev/null 2>&1 &
		PIDS+=($!)
		CLUSTER_PIDS="$CLUSTER_PIDS $p:$!"
		addrs="$addrs 127.0.0.1:$p"
	done
	for i in 0 1 2 3 4 5; do
		for _ in $(seq 50); do redis-cli -p $((base + i)) ping >/dev/null 2>&1 && break; sleep 0.1; done
	done
	# shellcheck disable=SC2086
	redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes >"$dir/cluster-create.log" 2>&1 ||
		{ cat "$dir/cluster-create.log" >&2; exit 3; }
	for _ in $(seq 300); do
		ok=1
		for i in 0 1 2 3 4 5; do
			p=$((base + i))
			redis-cli -p "$p" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' || ok=0
			redis-cli -p "$p" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_known_nodes:6' || ok=0
			if redis-cli -p "$p" info replication 2>/dev/null | tr -d '\r' | grep -qx 'role:slave'; then
				redis-cli -p "$p" info replication | tr -d '\r' | grep -qx 'master_link_status:up' || ok=0
			fi
		done
		[ "$ok" = 1 ] && break
		sleep 0.1
	done
	[ "$ok" = 1 ] || { echo "the Redis Cluster on $base.. did not become ready" >&2; exit 3; }
	CLUSTER_MASTERS=$(cluster_masters "$base")
	CLUSTER_URL="redis-cluster://$(for p in $CLUSTER_MASTERS; do printf '127.0.0.1:%s,' "$p"; done | sed 's/,$//')"
}

# cluster_masters BASE: the ports of the live nodes of start_cluster's cluster that are masters.
cluster_masters() {
	local i p
	for i in 0 1 2 3 4 5; do
		p=$(($1 + i))
		redis-cli -p "$p" info replication 2>/dev/null | tr -d '\r' | grep -qx 'role:master' && printf '%s ' "$p"
	done
	echo
}

# cluster_pid PORT: the pid of start_cluster's node on PORT.
cluster_pid() { local e; for e in $CLUSTER_PIDS; do [ "${e%%:*}" = "$1" ] && echo "${e#*:}"; done; }

# master_of_key BASE KEY: the port of the master serving KEY's slot.
master_of_key() {
	local slot p
	slot=$(redis-cli -p "$(cluster_masters "$1" | awk '{print $1}')" cluster keyslot "$2")
	for p in $(cluster_masters "$1"); do
		redis-cli -p "$p" cluster nodes | awk -v s="$slot" '$3 ~ /myself/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]; if (s >= r[1] && s <= r[2]) f = 1 } } END { exit !f }' && { echo "$p"; return 0; }
	done
	return 1
}

# count_bindings PORT...: index keys (sori:loc:{AOR}, one per registered AOR) on those servers.
count_bindings() { local p n=0; for p in "$@"; do n=$((n + $(redis-cli -p "$p" --scan --pattern 'sori:loc:{*}' | wc -l))); done; echo $n; }

# cmdstats PORT...: "COMMAND CALLS USEC" per command, summed over those servers (INFO commandstats).
cmdstats() {
	local p
	for p in "$@"; do redis-cli -p "$p" info commandstats; done | tr -d '\r' |
		awk -F'[:=,]' '/^cmdstat_/ {k = substr($1, 9); c[k] += $3; u[k] += $5} END {for (k in c) print k, c[k], u[k]}' | sort
}
