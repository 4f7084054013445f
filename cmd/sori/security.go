package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/sip/abuse"
	"github.com/sori-voice/sori/sip/abuse/authfail"
	"github.com/sori-voice/sori/sip/abuse/bans"
	"github.com/sori-voice/sori/sip/abuse/ratelimit"
	"github.com/sori-voice/sori/sip/abuse/scanner"
	"github.com/sori-voice/sori/sip/abuse/tollfraud"
	"github.com/sori-voice/sori/sip/nodes"
)

// banSweep is how often expired bans are forgotten and, with Redis, the
// whole list is read again (in case a published change was missed).
const banSweep = 30 * time.Second

// nodeName names this node in the bans it makes.
func nodeName(cfg *config.Config) string {
	host, _ := os.Hostname()
	if ls := cfg.Listeners(); len(ls) > 0 {
		return host + "/" + ls[0].Addr.String()
	}
	return host
}

// sharedBans is the Redis ban store when the registrar store is Redis.
func sharedBans(st store.Store) bans.Shared {
	if rs, ok := st.(*redisstore.Store); ok {
		return bans.NewRedis(rs.Client())
	}
	return nil
}

// abuseGuard is the security: section as the first link of the chain.
// Trusted networks and the trunks' inbound ACLs are exempt. The other
// nodes (sip.nodes) are not, by their addresses: only what is vouched for
// as a node's passes unscreened (abuse.Guard.Admit; sip/nodes).
func abuseGuard(ctx context.Context, cfg *config.Config, st store.Store, log *slog.Logger, reg prometheus.Registerer) (*abuse.Guard, *bans.List) {
	s := cfg.Security
	list := bans.New(nodeName(cfg), sharedBans(st), log.With("component", "bans"))
	go list.Run(ctx, banSweep)
	var exempt []netip.Prefix
	for _, p := range s.Trusted {
		exempt = append(exempt, netip.MustParsePrefix(p)) // validated by config
	}
	for _, t := range cfg.Trunks {
		for _, p := range t.InboundACL {
			exempt = append(exempt, netip.MustParsePrefix(p))
		}
	}
	gc := abuse.Config{
		Exempt: exempt, Reject: s.Action == "reject", RetryAfter: cfg.Registrar.RetryAfter,
		Bans: list, RateBanTime: s.RateLimit.BanTime.D(), AuthBanTime: s.AuthFailures.BanTime.D(),
		Log: log.With("component", "abuse"), Registerer: reg,
	}
	if len(cfg.SIP.Nodes) > 0 {
		peers := map[netip.Addr]bool{}
		for _, a := range cfg.SIP.Nodes {
			if p, err := nodes.ParseAddress(a); err == nil { // validated by config
				peers[p.Addr.Addr().Unmap()] = true
			}
		}
		gc.Node = func(ip netip.Addr) bool { return peers[ip.Unmap()] }
	}
	if s.RateLimit.Rate > 0 {
		gc.Limiter = ratelimit.New(ratelimit.Config{Rate: s.RateLimit.Rate, Burst: s.RateLimit.Burst, MaxSources: s.RateLimit.MaxSources})
	}
	if len(s.Scanners) > 0 {
		gc.Scanners = scanner.New(s.Scanners)
	}
	if a := s.AuthFailures; a.PerSource > 0 || a.PerUser > 0 {
		gc.AuthFails = authfail.New(authfail.Config{PerSource: a.PerSource, PerUser: a.PerUser, Window: a.Window.D()})
	}
	return abuse.New(gc), list
}

// tollGuard is security.toll with the users' overrides; the hourly count
// is in Redis with a Redis store.
func tollGuard(cfg *config.Config, st store.Store, reg prometheus.Registerer) *tollfraud.Guard {
	def := tollfraud.Limits{MaxCalls: cfg.Security.Toll.MaxCalls, CallsPerHour: cfg.Security.Toll.CallsPerHour}
	per := map[string]tollfraud.Limits{}
	for _, u := range cfg.Users {
		if u.Toll == nil {
			continue
		}
		l := def
		if u.Toll.MaxCalls != nil {
			l.MaxCalls = *u.Toll.MaxCalls
		}
		if u.Toll.CallsPerHour != nil {
			l.CallsPerHour = *u.Toll.CallsPerHour
		}
		per[u.Name] = l
	}
	var hourly tollfraud.HourlyCounter
	if rs, ok := st.(*redisstore.Store); ok {
		hourly = tollfraud.NewRedisCounter(rs.Client())
	}
	return tollfraud.New(def, per, hourly, cfg.SIP.DialogTimeout.D(), reg)
}

// banRequest is the body of POST /bans.
type banRequest struct {
	Address string `json:"address"`
	For     string `json:"for"` // a duration, "1h"; empty: 1h
	Reason  string `json:"reason"`
}

// parseBan checks a ban asked for by an operator.
func parseBan(r banRequest, node string, now time.Time) (bans.Ban, error) {
	a, err := netip.ParseAddr(r.Address)
	if err != nil {
		return bans.Ban{}, fmt.Errorf("%q is not an IP address", r.Address)
	}
	d := time.Hour
	if r.For != "" {
		if d, err = time.ParseDuration(r.For); err != nil || d <= 0 {
			return bans.Ban{}, fmt.Errorf("%q is not a positive duration (e.g. 30m, 1h)", r.For)
		}
	}
	if r.Reason == "" {
		r.Reason = "manual"
	}
	return bans.Ban{Address: a.Unmap(), Reason: r.Reason, Since: now, Until: now.Add(d), Node: node}, nil
}

// banRoutes serves the ban list on the HTTP listener: GET /bans (JSON),
// POST /bans {address, for, reason}, DELETE /bans/{address}.
func banRoutes(mux *http.ServeMux, list *bans.List) {
	mux.HandleFunc("GET /bans", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list.List(time.Now()))
	})
	mux.HandleFunc("POST /bans", func(w http.ResponseWriter, r *http.Request) {
		var br banRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&br); err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		b, err := parseBan(br, "", time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := list.Add(r.Context(), b); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(list.List(time.Now()))
	})
	mux.HandleFunc("DELETE /bans/{address}", func(w http.ResponseWriter, r *http.Request) {
		a, err := netip.ParseAddr(r.PathValue("address"))
		if err != nil {
			http.Error(w, fmt.Sprintf("%q is not an IP address", r.PathValue("address")), http.StatusBadRequest)
			return
		}
		found, err := list.Remove(r.Context(), a)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case !found:
			http.Error(w, a.String()+" is not banned", http.StatusNotFound)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
}
