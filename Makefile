# Sori. `make run` starts the switch on the embedded defaults; `make test` installs
# what is missing (Debian, as root) and runs every check CI runs.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin:/usr/sbin
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN := bin

.PHONY: all build run demo test deps fmt-check vet lint unit bench bench-media load-register load-register-transports load-calls cluster-failover redis-ops mem-figures reference-deps compare soak clean bpf

all: build

build:
	$(GO) build -o $(BIN)/sori ./cmd/sori
	$(GO) build -o $(BIN)/sori-anchor ./cmd/sori-anchor
	$(GO) build -o $(BIN)/sori-mediabench ./cmd/sori-mediabench

# The switch and its media anchor on the checked-in defaults (bindings in
# memory, loopback only); Ctrl-C stops both.
run: build
	@./$(BIN)/sori-anchor -ng 127.0.0.1:22222 -rtp-ports 30000-39999 -listen 127.0.0.1 -http 127.0.0.1:9061 & anchor=$$!; \
	trap 'kill $$anchor 2>/dev/null; wait $$anchor 2>/dev/null' EXIT; \
	./$(BIN)/sori -config config/sori.yaml

# The call quality map with traffic of known loss: sori (on testdata/demo/sori.yaml; bindings
# and the map in memory, STORE=redis: in a redis-server of its own on 127.0.0.1:6390),
# sori-anchor and bin/sori-demo, whose phones on three carriers (127.0.1.x, 127.0.2.x,
# 127.0.3.x) call each other for DURATION (3m); then it prints http://127.0.0.1:9060/quality
# and keeps sori up for it until Ctrl-C (KEEP=0: stops). Ports as make run's: SIP 5060,
# HTTP 9060, ng 22222, RTP 30000-39999, anchor HTTP 9061 (so not both at once).
demo: build
	$(GO) build -o $(BIN)/sori-demo ./cmd/sori-demo
	BIN=$(BIN) ./testdata/demo/demo.sh

# Installs redis-server, sipp (package sip-tester), kamailio (the ng interop
# test), baresip and linphonec (package linphone-cli; the softphone test),
# stunnel4 (carries SIPp's TCP over TLS: Debian's sipp has no TLS), iproute2
# (the kernel fast path's test across network namespaces),
# chromium (the quality page's test, headless) and rtpengine-daemon (sori
# driving rtpengine as its anchor) with apt-get, only when absent. Kamailio's own service is not wanted: it would take port 5060.
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v sipp >/dev/null 2>&1 || missing="$$missing sip-tester"; \
	PATH="$$PATH:/usr/sbin" command -v kamailio >/dev/null 2>&1 || missing="$$missing kamailio"; \
	command -v baresip >/dev/null 2>&1 || missing="$$missing baresip"; \
	command -v linphonec >/dev/null 2>&1 || missing="$$missing linphone-cli"; \
	command -v stunnel4 >/dev/null 2>&1 || missing="$$missing stunnel4"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	PATH="$$PATH:/usr/sbin" command -v rtpengine >/dev/null 2>&1 || missing="$$missing rtpengine-daemon"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		case "$$missing" in *kamailio*) systemctl disable --now kamailio >/dev/null 2>&1 || true;; esac; \
		case "$$missing" in *rtpengine*) systemctl disable --now rtpengine-daemon >/dev/null 2>&1 || true;; esac; \
	fi
	$(GO) mod download

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint: fmt-check vet
	$(GO) mod tidy -diff
	$(GO) run $(STATICCHECK) ./...

# Unit, contract (real redis-server) and end-to-end tests (real sori, redis-server
# and the SIPp scenarios in testdata/sipp), all under the race detector. The relay's
# tests run again without io_uring (epoll, recvmmsg, sendmmsg: kernels without it) and
# with io_uring sends but epoll receives (kernels before 6.0).
unit:
	$(GO) test -race -count=1 ./...
	RELAY_SEND_RING=off $(GO) test -race -count=1 ./media/relay/
	RELAY_RECV_RING=off $(GO) test -race -count=1 ./media/relay/

test: deps lint unit

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Rebuild the kernel fast path's eBPF object (media/fastpath/forward_bpfel.o,
# committed, so only after changing media/fastpath/bpf/forward.c).
bpf:
	@{ command -v clang >/dev/null 2>&1 && [ -e /usr/include/bpf/bpf_helpers.h ]; } || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libbpf-dev; }
	$(GO) generate ./media/fastpath/

# sori-anchor and rtpengine (installed here when absent, its service left
# off) under the same RTP load in one run: packets/s, loss, latency, CPU.
bench-media: deps build
	@PATH="$$PATH:/usr/sbin" command -v rtpengine >/dev/null 2>&1 || { \
		if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install rtpengine-daemon" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rtpengine-daemon >/dev/null; \
		systemctl disable --now rtpengine-daemon >/dev/null 2>&1 || true; }
	./testdata/bench/bench-media.sh

# Highest REGISTER rate (digest auth, Redis store) sustained for 20 s with no failure;
# STORE=redis-cluster (3 masters + 3 replicas), NODES=2 (two sori sharing the store, the
# load split between them: the aggregate rate).
load-register: deps build
	./testdata/sipp/load-register.sh

# The same over UDP, TCP and TLS one after the other (one SIPp connection for TCP and TLS; TLS
# through stunnel, as Debian's sipp has no TLS): the rate and the CPU per registration of each.
load-register-transports: deps build
	@for tr in udp tcp tls; do TRANSPORT=$$tr ./testdata/sipp/load-register.sh | grep '^RESULT'; done

# Highest call rate (short calls, every INVITE digest-authenticated) sustained for 20 s with
# no failed call; STORE=redis for the Redis store.
load-calls: deps build
	./testdata/sipp/load-calls.sh

# A Redis Cluster master killed under REGISTER load (RATE, 2000/s): the replica takes over,
# no binding is lost, the only errors are 503 + Retry-After in the failover window (printed).
cluster-failover: deps build
	./testdata/sipp/cluster-failover.sh

# Redis commands per REGISTER (new and refresh) and per anchored call, counted on a Redis
# Cluster (INFO commandstats and MONITOR); prints OPS and MEMORY lines.
redis-ops: deps build
	./testdata/sipp/redis-ops.sh

# Bytes per binding (memory store: sori's live heap; Redis store: used_memory) with 100 000
# registered AORs, and per answered, anchored call in sori and in sori-anchor with 5 000 calls up
# (no RTP); prints MEMORY lines. A few minutes.
mem-figures: deps build
	./testdata/sipp/mem-figures.sh

# What the reference harness (testdata/reference) needs beyond deps: rtpengine (rtpengine-daemon,
# its service left off) and Kamailio's db_redis (kamailio-redis-modules), with apt-get when absent.
reference-deps:
	@missing=""; \
	PATH="$$PATH:/usr/sbin" command -v rtpengine >/dev/null 2>&1 || missing="$$missing rtpengine-daemon"; \
	dpkg-query -W -f='$${Status}' kamailio-redis-modules 2>/dev/null | grep -q 'ok installed' || missing="$$missing kamailio-redis-modules"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		case "$$missing" in *rtpengine*) systemctl disable --now rtpengine-daemon >/dev/null 2>&1 || true;; esac; \
	fi

# sori's load-calls (MEDIA=1) and load-register, memory and Redis, each followed by the
# reference's (Kamailio 5.6 + rtpengine 10.5, testdata/reference) same load, then RATIO lines.
# BUDGET_S (210) is each search's time budget (BUDGET_S=20: a short run); MEDIA_BENCH=1 adds
# make bench-media's run at the end.
compare: deps build reference-deps
	./testdata/bench/compare.sh

# SOAK (10m) of steady calls (about 30/s) ending every way a call can end (caller or callee
# BYE, CANCEL, 486, timer C, media timeout), then goroutines, heap and the call gauges must be
# back to the baseline; e.g. SOAK=90s make soak. Not part of make test.
soak: deps build
	./testdata/sipp/soak.sh

clean:
	rm -rf $(BIN)
