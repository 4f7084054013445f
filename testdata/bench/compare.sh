#!/usr/bin/env bash
# compare.sh - sori against the reference (Kamailio 5.6 + rtpengine 10.5, testdata/reference)
# under the same loads, back to back on this machine, then one RATIO line per pair.
#
# Runs one after the other, each starting and stopping its own servers on 127.0.0.1:
#   calls, media anchored, bindings in memory: sori's load-calls.sh (MEDIA=1 STORE=memory), then
#     the reference's call_rate.sh mem-rtpe-auth (Kamailio challenges every INVITE, as sori
#     does) and mem-rtpe (INVITEs not challenged);
#   the same with bindings in Redis: load-calls.sh (MEDIA=1 STORE=redis), call_rate.sh
#     redis-rtpe-auth and redis-rtpe;
#   REGISTER with digest auth: load-register.sh STORE=memory against reg_rate.sh mem-authpv
#     (pv_www_authenticate, no DB lookup: sori too checks against users in its configuration),
#     and STORE=redis against redis-authpv (usrloc in Redis through db_redis);
#   with MEDIA_BENCH=1, last: testdata/bench/bench-media.sh (sori-anchor and rtpengine relaying
#     RTP), whose own RATIO lines are repeated.
# A ratio is sori's confirmed rate over the reference's (the rate that passed two steps), and the
# reference's server CPU per call or registration over sori's at those rates (above 1: sori
# spends less). Each RATIO line also gives the reference's highest rate that passed its search
# once (reference_max) and sori's rate over it: when the reference's confirmation fails at every
# rate its CONFIRMED max is 0, and the ratio against it NA. The criteria differ: sori's scripts allow no failed call or registration, the
# reference's 0.1 %; both want 95 % of the rate achieved. Server CPU is the servers' processes
# only (sori + Redis + sori-anchor; Kamailio and its children + Redis + rtpengine); SIPp shares
# the same cores.
#
# Environment (passed to every run): BUDGET_S (210: each rate search's time budget; 20 makes a
# short run), STEP_S (20; BUDGET_S - 11 when BUDGET_S is under 31), CALL_START_RATE (100),
# REG_START_RATE (1000), REF_RATE (0: the reference's extra step at a fixed rate is skipped),
# PCAP_S (0: no capture during the reference's confirmation, which would load only its side),
# MEDIA_BENCH (0), HOLD_MS, NCALLEES, NUSERS (each script's default), PORT_WAIT_S (300: how long
# a run waits for its fixed ports), OUT (results directory), PARTS ("calls register": which
# comparisons run; STORES ("memory redis") the same for the stores).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SIPP="$ROOT/testdata/sipp"
REF="$ROOT/testdata/reference"
export BUDGET_S=${BUDGET_S:-210} REF_RATE=${REF_RATE:-0} PCAP_S=${PCAP_S:-0}
# A search starts a step only while STEP_S + 11 s fit in what is left of BUDGET_S: a short budget
# gets shorter steps unless STEP_S is given.
if [ -z "${STEP_S:-}" ]; then
	STEP_S=20
	[ "$BUDGET_S" -lt 31 ] && STEP_S=$((BUDGET_S > 12 ? BUDGET_S - 11 : 1))
fi
export STEP_S
CALL_START_RATE=${CALL_START_RATE:-100}
REG_START_RATE=${REG_START_RATE:-1000}
MEDIA_BENCH=${MEDIA_BENCH:-0}
OUT=${OUT:-$(mktemp -d /tmp/sori-compare.XXXXXX)}
mkdir -p "$OUT"
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
N=0

# wait_ports PORT...: waits up to PORT_WAIT_S (300) for those ports to be free (UDP and TCP): the
# scripts' ports are fixed, and the machine may be running another load.
wait_ports() {
	local p t0 said=0
	t0=$(date +%s)
	for p in "$@"; do
		while ss -Hlnu "sport = :$p" | grep -q . || ss -Hlnt "sport = :$p" | grep -q .; do
			[ $(($(date +%s) - t0)) -ge "${PORT_WAIT_S:-300}" ] && return 0 # the script will say which
			[ "$said" = 1 ] || { log "port $p is in use; waiting"; said=1; }
			sleep 2
		done
	done
}

# run NAME CMD...: one script, its output in OUT/NN-NAME.log; sets LOGF. A failing run is
# reported and the comparison goes on (its figures are then NA).
run() {
	local name=$1
	shift
	N=$((N + 1))
	LOGF=$(printf '%s/%02d-%s.log' "$OUT" "$N" "$name")
	case "$name" in
	sori-calls-*) wait_ports 5170 5171 5172 5173 5174 9170 6392 ;;
	sori-register-*) wait_ports 5160 5161 5162 5163 9160 6391 ;;
	ref-*) wait_ports 5080 5081 5082 5083 5084 22222 6390 ;;
	esac
	log "$name: $*"
	"$@" >"$LOGF" 2>&1 || log "$name exited $? (see $LOGF)"
	grep -E '^(RESULT|CONFIRMED)' "$LOGF" | sed 's/^/  /' >&2 || true
	sleep 5 # sockets closed, the machine quiet before the next run
}

# kv FILE KEY: the value of KEY=... in FILE's RESULT line (number only), NA if absent.
kv() { grep '^RESULT' "$1" 2>/dev/null | tail -1 | grep -oE "(^| )$2=[0-9.]+" | head -1 | cut -d= -f2 | grep . || echo NA; }

# sori_calls STORE: load-calls.sh; sets RATE (confirmed calls/s) and CPU_US (server CPU per call).
sori_calls() {
	run "sori-calls-$1" env STORE="$1" MEDIA=1 START_RATE="$CALL_START_RATE" OUT="$OUT/$(printf %02d $((N + 1)))-sori-calls-$1" \
		"$SIPP/load-calls.sh"
	RATE=$(kv "$LOGF" confirmed_cps)
	CPU_US=$(cpu_us "$(kv "$LOGF" server_cpu)" "$RATE")
}

# sori_register STORE: load-register.sh; sets RATE (confirmed/s) and CPU_US (per registration).
sori_register() {
	run "sori-register-$1" env STORE="$1" START_RATE="$REG_START_RATE" OUT="$OUT/$(printf %02d $((N + 1)))-sori-register-$1" \
		"$SIPP/load-register.sh"
	RATE=$(kv "$LOGF" confirmed_per_s)
	CPU_US=$(cpu_us "$(kv "$LOGF" server_cpu)" "$RATE")
}

# free_block FROM: the first port from FROM on (in steps of 10) with it and the next 3 free over UDP:
# SIPp binds its media ports (audio and video RTP/RTCP) even when no RTP flows, and gives up on the
# reference's fixed ones (40000, 42000, 44000: inside the ephemeral range) when they are taken.
free_block() {
	local p=$1 i busy
	while [ "$p" -lt 65000 ]; do
		busy=0
		for i in 0 1 2 3; do ss -Hlnu "sport = :$((p + i))" | grep -q . && busy=1; done
		[ "$busy" = 0 ] && { echo "$p"; return; }
		p=$((p + 10))
	done
	echo "$1"
}

# ref SCRIPT VARIANT START: the reference's script; sets RATE (its CONFIRMED max) and CPU_US (server
# CPU of its passing confirmation step at that rate, from the run's summary.tsv).
ref() {
	local dir
	run "ref-${1%.sh}-$2" env START_RATE="$3" UAC_MEDIA_PORT="$(free_block 40000)" UAS_MEDIA_PORT="$(free_block 42000)" \
		REG_MEDIA_PORT="$(free_block 44000)" "$REF/$1" "$2"
	RATE=$(sed -n 's/^CONFIRMED max (passed twice) = \([0-9]*\).*/\1/p' "$LOGF" | tail -1)
	[ -n "$RATE" ] || RATE=NA
	REF_MAX=$(sed -n 's/^RESULT .*max_sustained_[a-z_]*=\([0-9]*\).*/\1/p' "$LOGF" | tail -1)
	[ -n "$REF_MAX" ] || REF_MAX=NA
	dir=$(sed -n 's/.*run dir: //p' "$LOGF" | head -1)
	# summary.tsv: kind, rate, ..., srv_cpu% (column 13), ..., pass (last column)
	CPU_US=$(cpu_us "$(awk -F'\t' -v r="$RATE" '$1=="confirm" && $2==r && $NF==1 {c=$13} END{print (c=="" ? "NA" : c)}' \
		"$dir/summary.tsv" 2>/dev/null || echo NA)" "$RATE")
}

# cpu_us CPU_PERCENT RATE: µs of server CPU per operation, NA when either is unknown or 0.
cpu_us() { awk -v c="$1" -v r="$2" 'BEGIN{if (c == "NA" || r == "NA" || r + 0 == 0 || c == "") print "NA"; else printf "%.0f", c / 100 / r * 1e6}'; }
# ratio A B: A/B with 2 decimals, NA when either is unknown or B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b}'; }

RATIOS=()
# pair WHAT SORI_RATE SORI_CPU REF_NAME: one RATIO line against the last ref run's RATE and CPU_US.
pair() {
	RATIOS+=("RATIO $1 sori=$2/s reference($4)=$RATE/s rate_ratio=$(ratio "$2" "$RATE") reference_max=$REF_MAX/s max_ratio=$(ratio "$2" "$REF_MAX") cpu_us_per_op sori=$3 reference=$CPU_US reference/sori=$(ratio "$CPU_US" "$3")")
}

{
	echo "date: $(date -Is)  host: $(hostname)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)  BUDGET_S=$BUDGET_S STEP_S=$STEP_S CALL_START_RATE=$CALL_START_RATE REG_START_RATE=$REG_START_RATE REF_RATE=$REF_RATE"
	echo "kamailio: $(kamailio -v 2>/dev/null | head -1)  rtpengine: $(rtpengine --version 2>&1 | head -1)"
} | tee "$OUT/info.txt" >&2
log "results in $OUT"

PARTS=${PARTS:-calls register} STORES=${STORES:-memory redis}
case " $PARTS " in *" calls "*) call_stores=$STORES ;; *) call_stores= ;; esac
case " $PARTS " in *" register "*) reg_stores=$STORES ;; *) reg_stores= ;; esac
for store in $call_stores; do
	sori_calls "$store"
	s_rate=$RATE s_cpu=$CPU_US
	pre=mem
	[ "$store" = redis ] && pre=redis
	for v in "$pre-rtpe-auth" "$pre-rtpe"; do
		ref call_rate.sh "$v" "$CALL_START_RATE"
		case "$v" in *-auth) what="calls store=$store media=anchored invite_auth=both" ;; *) what="calls store=$store media=anchored invite_auth=sori_only" ;; esac
		pair "$what" "$s_rate" "$s_cpu" "$v"
	done
done
for store in $reg_stores; do
	sori_register "$store"
	s_rate=$RATE s_cpu=$CPU_US
	v=mem-authpv
	[ "$store" = redis ] && v=redis-authpv
	ref reg_rate.sh "$v" "$REG_START_RATE"
	pair "register store=$store digest" "$s_rate" "$s_cpu" "$v"
done
if [ "$MEDIA_BENCH" = 1 ]; then
	run bench-media "$HERE/bench-media.sh"
	while IFS= read -r l; do RATIOS+=("$l"); done < <(grep '^RATIO' "$LOGF")
fi

echo "sori vs reference, $(date -Is), results in $OUT (criteria: sori 0 failed, reference <= 0.1 % failed)" | tee -a "$OUT/info.txt"
printf '%s\n' "${RATIOS[@]}" | tee -a "$OUT/info.txt"
