package config

import (
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Push is RFC 8599 push wake-up: how long a request is held for a
// sleeping app, and the providers pushes go through.
type Push struct {
	// Wait is how long an INVITE or MESSAGE is held for a pushed app to
	// register again.
	Wait Duration `yaml:"wait"`
	// RefreshBefore: a device that does not refresh its binding itself is
	// pushed this long before it expires, and devices that do are told
	// (+sip.pnsreg) to refresh this long before.
	RefreshBefore Duration       `yaml:"refresh_before"`
	Providers     []PushProvider `yaml:"providers"`
}

// PushProvider is one push service. Name is the pn-provider value phones
// register with (apns, fcm, or an operator's own for a webhook).
type PushProvider struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // apns, fcm or webhook
	URL  string `yaml:"url"`  // empty: the service's own (APNs production, FCM); required for a webhook
	CA   string `yaml:"ca"`   // PEM file of CAs to trust for URL besides the system's; empty: the system's only
	// APNs token authentication.
	TeamID  string `yaml:"team_id"`
	KeyID   string `yaml:"key_id"`
	KeyFile string `yaml:"key_file"` // the .p8 key
	Topic   string `yaml:"topic"`    // the app's bundle id (".voip" is added)
	// FCM HTTP v1.
	ServiceAccount string `yaml:"service_account"` // the service account JSON file
	ProjectID      string `yaml:"project_id"`      // empty: the service account's
	// Webhook.
	Secret string `yaml:"secret"` // HMAC-SHA256 key of X-Sori-Signature; empty: unsigned
}

func defaultPush() Push {
	return Push{Wait: Duration(10 * time.Second), RefreshBefore: Duration(130 * time.Second)}
}

func (v *validator) checkPush(c *Config) {
	p := c.Push
	if w := p.Wait.D(); w < 500*time.Millisecond || w > 2*time.Minute {
		v.fail("push.wait", "%v: give 500ms..2m", w)
	}
	if r := p.RefreshBefore.D(); r < 0 || r > time.Hour {
		v.fail("push.refresh_before", "%v: give 0 (no refresh pushes) up to 1h", r)
	}
	seen := map[string]bool{}
	for i, pp := range p.Providers {
		k := "push.providers." + strconv.Itoa(i)
		name := strings.ToLower(pp.Name)
		switch {
		case name == "" || strings.ContainsAny(name, " ;=\"<>"):
			v.fail(k+".name", "%q is not a pn-provider value", pp.Name)
		case seen[name]:
			v.fail(k+".name", "%q is given twice", pp.Name)
		}
		seen[name] = true
		if pp.URL != "" {
			if u, err := url.Parse(pp.URL); err != nil || u.Scheme != "https" || u.Host == "" {
				v.fail(k+".url", "%q is not an https URL", pp.URL)
			}
		}
		file := func(field, path string) {
			if path == "" {
				v.fail(k+"."+field, "required for a %s provider", pp.Type)
				return
			}
			if _, err := os.Stat(path); err != nil {
				v.fail(k+"."+field, "%v", err)
			}
		}
		if pp.CA != "" {
			file("ca", pp.CA)
		}
		switch pp.Type {
		case "apns":
			if pp.TeamID == "" || pp.KeyID == "" || pp.Topic == "" {
				v.fail(k, "an apns provider needs team_id, key_id, key_file and topic")
			}
			file("key_file", pp.KeyFile)
		case "fcm":
			file("service_account", pp.ServiceAccount)
		case "webhook":
			if pp.URL == "" {
				v.fail(k+".url", "required for a webhook provider")
			}
		default:
			v.fail(k+".type", "%q: give apns, fcm or webhook", pp.Type)
		}
	}
}
