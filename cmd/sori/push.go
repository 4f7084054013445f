package main

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/sip/push"
	"github.com/sori-voice/sori/sip/push/apns"
	"github.com/sori-voice/sori/sip/push/fcm"
	"github.com/sori-voice/sori/sip/push/webhook"
	"github.com/sori-voice/sori/sip/pushwake"
	"github.com/sori-voice/sori/sip/pushwake/redisbus"
)

// pushWaker builds the push providers of push.providers and the Waker
// that uses them; nil when none is configured. With the Redis store,
// woken apps' registrations reach every node through Redis.
func pushWaker(cfg *config.Config, st store.Store, log *slog.Logger, reg prometheus.Registerer) (*pushwake.Waker, error) {
	if len(cfg.Push.Providers) == 0 {
		return nil, nil
	}
	providers := map[string]push.Provider{}
	for i, pc := range cfg.Push.Providers {
		p, err := pushProvider(pc)
		if err != nil {
			return nil, fmt.Errorf("push.providers.%d (%s): %w", i, pc.Name, err)
		}
		providers[strings.ToLower(pc.Name)] = p
	}
	wc := pushwake.Config{Providers: providers, Wait: cfg.Push.Wait.D(), RefreshBefore: cfg.Push.RefreshBefore.D(),
		Store: st, Log: log.With("component", "push"), Registerer: reg}
	if rs, ok := st.(*redisstore.Store); ok {
		wc.Bus = redisbus.New(rs.Client())
	}
	return pushwake.New(wc), nil
}

func pushProvider(pc config.PushProvider) (push.Provider, error) {
	var roots *x509.CertPool
	if pc.CA != "" {
		pem, err := os.ReadFile(pc.CA)
		if err != nil {
			return nil, err
		}
		if roots, err = x509.SystemCertPool(); err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no certificate", pc.CA)
		}
	}
	switch pc.Type {
	case "apns":
		key, err := os.ReadFile(pc.KeyFile)
		if err != nil {
			return nil, err
		}
		return apns.New(apns.Config{URL: pc.URL, TeamID: pc.TeamID, KeyID: pc.KeyID, Key: key, Topic: pc.Topic, RootCAs: roots})
	case "fcm":
		sa, err := os.ReadFile(pc.ServiceAccount)
		if err != nil {
			return nil, err
		}
		return fcm.New(fcm.Config{URL: pc.URL, ServiceAccountJSON: sa, ProjectID: pc.ProjectID, RootCAs: roots})
	case "webhook":
		return webhook.New(webhook.Config{URL: pc.URL, Name: strings.ToLower(pc.Name), Secret: []byte(pc.Secret), RootCAs: roots})
	}
	return nil, fmt.Errorf("type %q", pc.Type)
}
