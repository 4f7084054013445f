package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/sip/nodes"
	"github.com/sori-voice/sori/sip/nodes/redisnodes"
)

// nodeSet is this node among sip.nodes (validated by config), nil for a
// single node. It claims its id in Redis: another live node with the same
// id stops this one from starting; a Redis not reachable yet does not
// (the heartbeat is written once it is). With sip.node_transport tls, a
// node's address is trusted only on a TLS connection whose certificate
// names that node (vouched: the transport's Vouched); otherwise a
// message from a node's address must carry its signature (signer's, the
// transport's).
func nodeSet(ctx context.Context, cfg *config.Config, st store.Store, conns nodes.Conns, vouched func(transport, src string) bool, signer *nodes.Signer, secret []byte, log *slog.Logger, reg prometheus.Registerer) (*nodes.Set, error) {
	if len(cfg.SIP.Nodes) == 0 {
		return nil, nil
	}
	self, err := nodes.ParseAddress(cfg.SIP.NodeAddress)
	if err != nil {
		return nil, err
	}
	var peers []nodes.Address
	for _, a := range cfg.SIP.Nodes {
		p, err := nodes.ParseAddress(a)
		if err != nil {
			return nil, err
		}
		peers = append(peers, p)
	}
	c := nodes.Config{ID: cfg.SIP.NodeID, Self: self, Peers: peers, Secret: secret, Conns: conns,
		Log: log.With("component", "nodes"), Registerer: reg}
	if cfg.SIP.NodeTransport == "tls" {
		c.Vouched = vouched
	} else {
		c.Signer = signer
	}
	if rs, ok := st.(*redisstore.Store); ok {
		c.Beats = redisnodes.New(rs.Client(), "")
	}
	s := nodes.New(c)
	jctx, cancel := context.WithTimeout(ctx, cfg.Registrar.StoreTimeout.D()*4)
	defer cancel()
	switch err := s.Join(jctx); {
	case errors.Is(err, nodes.ErrIDInUse):
		return nil, err
	case err != nil:
		log.Warn("node heartbeat not written at start", "node", cfg.SIP.NodeID, "error", err)
	}
	log.Info("node of a service", "node", cfg.SIP.NodeID, "address", self.String(), "nodes", len(peers))
	return s, nil
}

// nodeSigner signs this node's messages to the other nodes and checks
// theirs when the nodes talk in the clear (sip/nodes sign.go): nil for a
// single node, and with sip.node_transport tls (the certificates vouch).
// The key is sip.auth_secret's, which every node shares.
func nodeSigner(cfg *config.Config, secret []byte) (*nodes.Signer, error) {
	if len(cfg.SIP.Nodes) == 0 || cfg.SIP.NodeTransport == "tls" {
		return nil, nil
	}
	self, err := nodes.ParseAddress(cfg.SIP.NodeAddress)
	if err != nil {
		return nil, fmt.Errorf("sip.node_address: %w", err)
	}
	var peers []nodes.Address
	for _, a := range cfg.SIP.Nodes {
		p, err := nodes.ParseAddress(a)
		if err != nil {
			return nil, fmt.Errorf("sip.nodes: %w", err)
		}
		peers = append(peers, p)
	}
	return nodes.NewSigner(secret, self, peers), nil
}

// edgeProxies is sip.edge_proxies as the registrar's Path check.
func edgeProxies(cfg *config.Config) func(src string) bool {
	var ps []netip.Prefix
	for _, p := range cfg.SIP.EdgeProxies {
		ps = append(ps, netip.MustParsePrefix(p)) // validated by config
	}
	return func(src string) bool {
		ap, err := netip.ParseAddrPort(src)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if p.Contains(ap.Addr().Unmap()) {
				return true
			}
		}
		return false
	}
}

// nodeRoutes serves GET /nodes: this node and the others it has met in
// bindings, up or down by their heartbeats (read again for each GET).
func nodeRoutes(mux *http.ServeMux, others *nodes.Set) {
	if others == nil {
		return
	}
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(others.Peers(ctx))
	})
}
