package registrar

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// PushPolicy is what the registrar tells phones about push wake-up (RFC
// 8599). Providers are the pn-provider values sori sends pushes with.
type PushPolicy struct {
	Providers []string
	// RefreshBefore is advertised as +sip.pnsreg: how long before its
	// binding expires a device that refreshes itself should do so.
	RefreshBefore time.Duration
}

// pushContact is what a Contact URI says about push (RFC 8599 §4.1).
type pushContact struct {
	provider, prid, param string
	query                 bool // pn-provider without a value: "which do you support?"
}

// readPush reads the pn-* Contact URI parameters; ok is false when there
// are none.
func readPush(u sip.Uri) (pushContact, bool) {
	if u.UriParams == nil || !u.UriParams.Has("pn-provider") {
		return pushContact{}, false
	}
	p := pushContact{}
	p.provider, _ = u.UriParams.Get("pn-provider")
	p.prid, _ = u.UriParams.Get("pn-prid")
	p.param, _ = u.UriParams.Get("pn-param")
	p.query = p.provider == ""
	return p, true
}

// served reports whether sori sends pushes with provider.
func (pp PushPolicy) served(provider string) bool {
	return slices.ContainsFunc(pp.Providers, func(s string) bool { return strings.EqualFold(s, provider) })
}

// featureCaps is the Feature-Caps of a 2xx (RFC 8599 §5.2, RFC 6809): the
// provider sori pushes this binding with and, for a device that
// refreshes its binding itself, when it should; or, for a query, every
// provider sori serves.
func (pp PushPolicy) featureCaps(p pushContact) []string {
	if p.query {
		out := make([]string, 0, len(pp.Providers))
		for _, name := range pp.Providers {
			out = append(out, `*;+sip.pns="`+name+`"`)
		}
		return out
	}
	before := pp.RefreshBefore
	if before <= 0 {
		before = 130 * time.Second
	}
	return []string{`*;+sip.pns="` + strings.ToLower(p.provider) + `";+sip.pnsreg="` + strconv.Itoa(int(before/time.Second)) + `"`}
}
