package registrar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/memory"
	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/local"
)

var policy = Policy{MinExpires: 60, MaxExpires: 3600, DefaultExpires: 1800, MaxContacts: 3,
	Push: PushPolicy{Providers: []string{"apns", "fcm"}, RefreshBefore: 130 * time.Second}}

// retryAfter is what the server adds to a 503 in these tests.
const retryAfter = 7

type harness struct {
	t       *testing.T
	reg     *Registrar
	handler chain.Handler
	store   *memory.Store
	dig     *digest.Authenticator
	now     time.Time
	passed  int // requests handed to the next handler
}

func newHarness(t *testing.T, algs ...string) *harness {
	return newHarnessWithStore(t, nil, algs...)
}

func newHarnessWithStore(t *testing.T, bindings store.Bindings, algs ...string) *harness {
	t.Helper()
	if len(algs) == 0 {
		algs = []string{"MD5", "SHA-256"}
	}
	dig, err := digest.New("sori.test", algs, []byte("registrar-test-secret!"), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: memory.New(time.Hour), dig: dig, now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	t.Cleanup(func() { _ = h.store.Close() })
	if bindings == nil {
		bindings = h.store
	}
	users := auth.Directory{Static: map[string]store.Subscriber{
		"alice": auth.NewSubscriber("alice", "sori.test", "alice-secret"),
		"bob":   auth.NewSubscriber("bob", "sori.test", "bob-secret"),
	}}
	self := local.New("sori.test", "127.0.0.1:5060")
	h.reg = New(self, auth.New(dig, users, nil), bindings, policy, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	h.reg.now = func() time.Time { return h.now }
	h.handler = chain.Build(chain.HandlerFunc(func(context.Context, chain.ResponseWriter, *chain.Request) chain.Result {
		h.passed++
		return chain.Done
	}), h.reg)
	return h
}

type capture struct{ res []*sip.Response }

func (c *capture) Respond(r *sip.Response) error { c.res = append(c.res, r); return nil }

// send runs one raw request through the registrar and returns its response (nil if passed on).
func (h *harness) send(raw string) *sip.Response {
	h.t.Helper()
	msg, err := sip.ParseMessage([]byte(strings.ReplaceAll(raw, "\n", "\r\n")))
	if err != nil {
		h.t.Fatalf("parse: %v\n%s", err, raw)
	}
	req := msg.(*sip.Request)
	req.SetSource("203.0.113.5:40000")
	req.SetTransport("UDP")
	w := &capture{}
	if err := chain.Answer(w, req, h.handler.ServeSIP(context.Background(), w, &chain.Request{Request: req}), retryAfter); err != nil {
		h.t.Fatal(err)
	}
	if len(w.res) > 1 {
		h.t.Fatalf("%d responses to one request", len(w.res))
	}
	if len(w.res) == 0 {
		return nil
	}
	return w.res[0]
}

// request is one REGISTER to build.
type request struct {
	user, toUser, toHost, ruri string
	callID                     string
	cseq                       int
	headers                    []string // extra header lines (Contact, Expires, ...)
}

func (r request) raw(auth string) string {
	if r.toUser == "" {
		r.toUser = r.user
	}
	if r.ruri == "" {
		r.ruri = "sip:sori.test"
	}
	if r.callID == "" {
		r.callID = "call-" + r.user
	}
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER %s SIP/2.0\n", r.ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK%d%s;rport\n", r.cseq, r.user)
	b.WriteString("Max-Forwards: 70\n")
	fmt.Fprintf(&b, "From: <sip:%s@sori.test>;tag=f1\n", r.user)
	if r.toHost == "" {
		r.toHost = "sori.test"
	}
	fmt.Fprintf(&b, "To: <sip:%s@%s>\n", r.toUser, r.toHost)
	fmt.Fprintf(&b, "Call-ID: %s\n", r.callID)
	fmt.Fprintf(&b, "CSeq: %d REGISTER\n", r.cseq)
	for _, hd := range r.headers {
		b.WriteString(hd + "\n")
	}
	if auth != "" {
		b.WriteString("Authorization: " + auth + "\n")
	}
	b.WriteString("Content-Length: 0\n\n")
	return b.String()
}

// answer computes credentials for a challenge with an independent client library.
func answer(t *testing.T, challenge, user, password string, nc int) string {
	t.Helper()
	return answerFor(t, challenge, "sip:sori.test", user, password, nc)
}

// answerFor computes credentials for a given digest-uri.
func answerFor(t *testing.T, challenge, uri, user, password string, nc int) string {
	t.Helper()
	ch, err := client.ParseChallenge(challenge)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := client.Digest(ch, client.Options{Method: "REGISTER", URI: uri, Username: user, Password: password, Count: nc})
	if err != nil {
		t.Fatal(err)
	}
	return cr.String()
}

// register sends r, answers the 401 with password (first challenge) and
// returns the final response. A REGISTER whose syntax is wrong gets its 400
// before any challenge: that one is returned.
func (h *harness) register(r request, password string) *sip.Response {
	h.t.Helper()
	res := h.send(r.raw(""))
	if res.StatusCode == 400 {
		return res
	}
	if res.StatusCode != 401 {
		h.t.Fatalf("unauthenticated REGISTER got %d, want 401", res.StatusCode)
	}
	r.cseq++
	return h.send(r.raw(answer(h.t, res.GetHeader("WWW-Authenticate").Value(), r.user, password, 1)))
}

func contacts(res *sip.Response) []string {
	var out []string
	for _, c := range res.GetHeaders("Contact") {
		out = append(out, c.Value())
	}
	return out
}

func TestChallengeOffersBothAlgorithmsInOrder(t *testing.T) {
	for _, order := range [][]string{{"MD5", "SHA-256"}, {"SHA-256", "MD5"}} {
		h := newHarness(t, order...)
		res := h.send(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:alice@10.0.0.1>"}}.raw(""))
		chs := res.GetHeaders("WWW-Authenticate")
		if res.StatusCode != 401 || len(chs) != 2 {
			t.Fatalf("got %d with %d challenges", res.StatusCode, len(chs))
		}
		for i, alg := range order {
			if !strings.Contains(chs[i].Value(), "algorithm="+alg) || !strings.Contains(chs[i].Value(), `qop="auth"`) {
				t.Errorf("challenge %d = %q, want %s", i, chs[i].Value(), alg)
			}
		}
	}
}

func TestRegisterWithEachAlgorithm(t *testing.T) {
	for i, alg := range []string{"MD5", "SHA-256"} {
		h := newHarness(t)
		r := request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:alice@10.0.0.1:5062>"}}
		res := h.send(r.raw(""))
		ch := res.GetHeaders("WWW-Authenticate")[i].Value()
		r.cseq = 2
		res = h.send(r.raw(answer(t, ch, "alice", "alice-secret", 1)))
		if res.StatusCode != 200 {
			t.Fatalf("%s: got %d %s", alg, res.StatusCode, res.Reason)
		}
		if got := contacts(res); len(got) != 1 || got[0] != "<sip:alice@10.0.0.1:5062>;expires=1800" {
			t.Fatalf("%s: contacts %q", alg, got)
		}
		if res.GetHeader("Date") == nil {
			t.Errorf("%s: no Date header", alg)
		}
	}
}

func TestExpires(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		code    int
		want    []string
	}{
		{"default", []string{"Contact: <sip:a@10.0.0.1>"}, 200, []string{"<sip:a@10.0.0.1>;expires=1800"}},
		{"header", []string{"Contact: <sip:a@10.0.0.1>", "Expires: 600"}, 200, []string{"<sip:a@10.0.0.1>;expires=600"}},
		{"param beats header", []string{"Contact: <sip:a@10.0.0.1>;expires=120", "Expires: 600"}, 200, []string{"<sip:a@10.0.0.1>;expires=120"}},
		{"clamped to max", []string{"Contact: <sip:a@10.0.0.1>", "Expires: 86400"}, 200, []string{"<sip:a@10.0.0.1>;expires=3600"}},
		{"below min", []string{"Contact: <sip:a@10.0.0.1>", "Expires: 30"}, 423, nil},
		{"param below min", []string{"Contact: <sip:a@10.0.0.1>;expires=59"}, 423, nil},
		{"not a number", []string{"Contact: <sip:a@10.0.0.1>", "Expires: soon"}, 400, nil},
		{"bad q", []string{"Contact: <sip:a@10.0.0.1>;q=1.5"}, 400, nil},
		{"zero on a new contact stores nothing", []string{"Contact: <sip:a@10.0.0.1>", "Expires: 0"}, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.register(request{user: "alice", cseq: 1, headers: tt.headers}, "alice-secret")
			if res.StatusCode != tt.code {
				t.Fatalf("got %d %s, want %d", res.StatusCode, res.Reason, tt.code)
			}
			if got := contacts(res); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("contacts %q, want %q", got, tt.want)
			}
			if tt.code == 423 {
				if me := res.GetHeader("Min-Expires"); me == nil || me.Value() != "60" {
					t.Fatalf("423 without Min-Expires: 60: %v", me)
				}
				if bs, _ := h.store.Lookup(context.Background(), "alice@sori.test", h.now); len(bs) != 0 {
					t.Fatalf("rejected REGISTER stored %v", bs)
				}
			}
		})
	}
}

func TestSeveralContactsQueryAndRemoval(t *testing.T) {
	h := newHarness(t)
	res := h.register(request{user: "alice", cseq: 1, headers: []string{
		`Contact: <sip:alice@10.0.0.1>;q=0.5, <sip:alice@10.0.0.2;transport=tcp>;q=1.0;+sip.instance="<urn:uuid:1>";reg-id=1`,
		"Contact: <sip:alice@10.0.0.3>;expires=300",
		"Expires: 900",
	}}, "alice-secret")
	want := []string{
		`<sip:alice@10.0.0.3>;expires=300`, // no q counts as 1.0; newest first among equals
		`<sip:alice@10.0.0.2;transport=tcp>;expires=900;q=1.0;+sip.instance="<urn:uuid:1>";reg-id=1`,
		`<sip:alice@10.0.0.1>;expires=900;q=0.5`,
	}
	if got := contacts(res); res.StatusCode != 200 || strings.Join(got, "|") != strings.Join(want, "|") {
		// Equal q and equal update time: order by id is stable but arbitrary; compare as sets.
		if !sameSet(got, want) {
			t.Fatalf("got %d %q\nwant %q", res.StatusCode, got, want)
		}
	}

	// A query (no Contact) lists the bindings with the time left and changes nothing.
	h.now = h.now.Add(100 * time.Second)
	res = h.register(request{user: "alice", callID: "query-1", cseq: 1}, "alice-secret")
	if got := contacts(res); res.StatusCode != 200 || len(got) != 3 || !strings.Contains(strings.Join(got, ","), "10.0.0.3>;expires=200") {
		t.Fatalf("query: %d %q", res.StatusCode, got)
	}

	// Expires 0 on one contact removes just that one.
	res = h.register(request{user: "alice", cseq: 3, headers: []string{"Contact: <sip:alice@10.0.0.1>;expires=0"}}, "alice-secret")
	if got := contacts(res); len(got) != 2 || strings.Contains(strings.Join(got, ","), "10.0.0.1>") {
		t.Fatalf("after removing one: %q", got)
	}

	// "*" with Expires: 0 removes all.
	res = h.register(request{user: "alice", cseq: 5, headers: []string{"Contact: *", "Expires: 0"}}, "alice-secret")
	if res.StatusCode != 200 || len(contacts(res)) != 0 {
		t.Fatalf("wildcard removal: %d %q", res.StatusCode, contacts(res))
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestWildcardRules(t *testing.T) {
	for _, headers := range [][]string{
		{"Contact: *"},                   // no Expires
		{"Contact: *", "Expires: 60"},    // Expires not 0
		{"Contact: *, <sip:a@10.0.0.1>"}, // not alone
	} {
		h := newHarness(t)
		res := h.register(request{user: "alice", cseq: 1, headers: headers}, "alice-secret")
		if res.StatusCode != 400 {
			t.Errorf("%q: got %d, want 400", headers, res.StatusCode)
		}
	}
}

func TestCallIDCSeqRule(t *testing.T) {
	h := newHarness(t)
	if res := h.register(request{user: "alice", callID: "c1", cseq: 10, headers: []string{"Contact: <sip:alice@10.0.0.1>", "Expires: 600"}}, "alice-secret"); res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	// An older CSeq on the same Call-ID (a delayed packet) must not overwrite.
	res := h.register(request{user: "alice", callID: "c1", cseq: 5, headers: []string{"Contact: <sip:alice@10.0.0.1>", "Expires: 3000"}}, "alice-secret")
	if res.StatusCode != 400 {
		t.Fatalf("older CSeq: got %d", res.StatusCode)
	}
	bs, _ := h.store.Lookup(context.Background(), "alice@sori.test", h.now)
	if len(bs) != 1 || !bs[0].Expires.Equal(h.now.Add(600*time.Second)) {
		t.Fatalf("binding changed: %+v", bs)
	}
}

func TestAuthorizationRules(t *testing.T) {
	h := newHarness(t)
	contact := []string{"Contact: <sip:x@10.0.0.1>"}

	// alice's credentials for bob's address-of-record: 403.
	if res := h.register(request{user: "alice", toUser: "bob", cseq: 1, headers: contact}, "alice-secret"); res.StatusCode != 403 {
		t.Errorf("foreign AOR: got %d", res.StatusCode)
	}
	// Wrong password: challenged again.
	if res := h.register(request{user: "alice", cseq: 1, headers: contact}, "guess"); res.StatusCode != 401 {
		t.Errorf("wrong password: got %d", res.StatusCode)
	}
	// Unknown user: challenged again, like a wrong password (no user enumeration).
	if res := h.register(request{user: "mallory", cseq: 1, headers: contact}, "x"); res.StatusCode != 401 {
		t.Errorf("unknown user: got %d", res.StatusCode)
	}
	// Another domain in the Request-URI: challenged like any other (nobody
	// learns which domains are served without authenticating), then 403.
	r := request{user: "alice", cseq: 1, ruri: "sip:other.example", headers: contact}
	res := h.send(r.raw(""))
	if res.StatusCode != 401 {
		t.Errorf("foreign Request-URI, no credentials: got %d", res.StatusCode)
	} else {
		r.cseq++
		if res := h.send(r.raw(answerFor(t, res.GetHeader("WWW-Authenticate").Value(), "sip:other.example", "alice", "alice-secret", 1))); res.StatusCode != 403 {
			t.Errorf("foreign Request-URI: got %d", res.StatusCode)
		}
	}
	// Another domain in To: 403 once authenticated.
	if res := h.register(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:x@10.0.0.1>", "Expires: 600"}, toHost: "other.example"}, "alice-secret"); res.StatusCode != 403 {
		t.Errorf("foreign To: got %d", res.StatusCode)
	}
	// Credentials computed for another resource: 400 (RFC 7616 §3.4.6),
	// however right the password.
	r = request{user: "alice", cseq: 1, headers: contact}
	res = h.send(r.raw(""))
	r.cseq++
	if res := h.send(r.raw(answerFor(t, res.GetHeader("WWW-Authenticate").Value(), "sip:evil.example.org", "alice", "alice-secret", 1))); res.StatusCode != 400 {
		t.Errorf("digest uri of another resource: got %d %s, want 400", res.StatusCode, res.Reason)
	}
	if bs, _ := h.store.Lookup(context.Background(), "alice@sori.test", h.now); len(bs) != 0 {
		t.Errorf("refused REGISTERs stored %v", bs)
	}
	// Our IP address works as the domain, as phones configured with an IP send it.
	r = request{user: "alice", cseq: 1, ruri: "sip:127.0.0.1:5060", headers: contact}
	if res := h.send(r.raw("")); res.StatusCode != 401 {
		t.Errorf("Request-URI with our address: got %d", res.StatusCode)
	}
}

func TestStaleAndReplayedNonce(t *testing.T) {
	h := newHarness(t)
	r := request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:alice@10.0.0.1>"}}
	ch := h.send(r.raw("")).GetHeader("WWW-Authenticate").Value()
	cred := answer(t, ch, "alice", "alice-secret", 1)
	r.cseq = 2
	if res := h.send(r.raw(cred)); res.StatusCode != 200 {
		t.Fatalf("first use: %d", res.StatusCode)
	}
	// The same nonce-count again (a replay): 401 with stale=true.
	r.cseq = 3
	res := h.send(r.raw(cred))
	if res.StatusCode != 401 || !strings.Contains(res.GetHeader("WWW-Authenticate").Value(), "stale=true") {
		t.Fatalf("replay: %d %v", res.StatusCode, res.GetHeader("WWW-Authenticate"))
	}
	// The next nonce-count works; after the nonce expires it is stale.
	r.cseq = 4
	if res := h.send(r.raw(answer(t, ch, "alice", "alice-secret", 2))); res.StatusCode != 200 {
		t.Fatalf("nc=2: %d", res.StatusCode)
	}
	r.cseq = 5
	later := answer(t, ch, "alice", "alice-secret", 3)
	h.reg.auth = auth.New(mustDigestAt(t, time.Now().Add(10*time.Minute)), auth.Directory{Static: map[string]store.Subscriber{"alice": auth.NewSubscriber("alice", "sori.test", "alice-secret")}}, nil)
	res = h.send(r.raw(later))
	if res.StatusCode != 401 || !strings.Contains(res.GetHeader("WWW-Authenticate").Value(), "stale=true") {
		t.Fatalf("expired nonce: %d %v", res.StatusCode, res.GetHeader("WWW-Authenticate"))
	}
}

// mustDigestAt returns an authenticator with the harness secret whose clock reads at.
func mustDigestAt(t *testing.T, at time.Time) *digest.Authenticator {
	t.Helper()
	d, err := digest.New("sori.test", []string{"MD5", "SHA-256"}, []byte("registrar-test-secret!"), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	d.SetClock(func() time.Time { return at })
	return d
}

func TestNATSourceIsStored(t *testing.T) {
	h := newHarness(t)
	// The phone writes its private address; the packet came from the NAT's public one.
	res := h.register(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:alice@192.168.1.20:5060>", "User-Agent: baresip"}}, "alice-secret")
	if res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	bs, _ := h.store.Lookup(context.Background(), "alice@sori.test", h.now)
	if len(bs) != 1 || bs[0].Source != "203.0.113.5:40000" || !bs[0].NAT || bs[0].Transport != "udp" || bs[0].Contact != "sip:alice@192.168.1.20:5060" || bs[0].UserAgent != "baresip" {
		t.Fatalf("binding %+v", bs)
	}
}

func TestInstanceReplacesOldContact(t *testing.T) {
	h := newHarness(t)
	inst := `;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`
	h.register(request{user: "alice", callID: "wifi", cseq: 1, headers: []string{"Contact: <sip:alice@192.168.1.20:5060>" + inst}}, "alice-secret")
	res := h.register(request{user: "alice", callID: "lte", cseq: 1, headers: []string{"Contact: <sip:alice@10.20.30.40:5060>" + inst}}, "alice-secret")
	if got := contacts(res); len(got) != 1 || !strings.HasPrefix(got[0], "<sip:alice@10.20.30.40:5060>") {
		t.Fatalf("contacts %q, want only the new address", got)
	}
}

func TestMaxContacts(t *testing.T) {
	h := newHarness(t)
	res := h.register(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:a@10.0.0.1>, <sip:a@10.0.0.2>, <sip:a@10.0.0.3>, <sip:a@10.0.0.4>"}}, "alice-secret")
	if res.StatusCode != 503 {
		t.Fatalf("four contacts with max 3: %d", res.StatusCode)
	}
}

type failingStore struct{ store.Bindings }

func (failingStore) Update(context.Context, store.Update) ([]store.Binding, error) {
	return nil, errors.New("connection refused")
}

func TestStoreFailureAnswers503WithRetryAfter(t *testing.T) {
	h := newHarnessWithStore(t, failingStore{})
	res := h.register(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:a@10.0.0.1>"}}, "alice-secret")
	if res.StatusCode != 503 {
		t.Fatalf("got %d", res.StatusCode)
	}
	if ra := res.GetHeader("Retry-After"); ra == nil || ra.Value() != "7" {
		t.Fatalf("Retry-After = %v", ra)
	}
}

func TestOtherMethodsPassThrough(t *testing.T) {
	h := newHarness(t)
	raw := "OPTIONS sip:sori.test SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\nFrom: <sip:a@sori.test>;tag=1\nTo: <sip:sori.test>\nCall-ID: o\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
	if res := h.send(raw); res != nil || h.passed != 1 {
		t.Fatalf("OPTIONS answered by the registrar: %v", res)
	}
}

// What a REGISTER with broken, foreign or abusive credentials or contacts
// gets: 400 for what is malformed, a new challenge for what is merely not
// acceptable, 403 for what is forbidden; never 200, and nothing stored.
func TestCredentialAndContactVariants(t *testing.T) {
	contact := []string{"Contact: <sip:alice@10.0.0.1>", "Expires: 600"}
	tests := []struct {
		name    string
		headers []string
		auth    func(ch string) string // the Authorization value, from the challenge
		want    int
	}{
		{"unterminated quotes", contact, func(ch string) string {
			return `Digest username="alice, realm="sori.test", nonce="x, uri=sip:sori.test, response="`
		}, 400},
		{"no response", contact, func(ch string) string {
			return strings.Replace(answer(t, ch, "alice", "alice-secret", 1), "response=", "xresponse=", 1)
		}, 400},
		{"qop without cnonce and nc", contact, func(ch string) string {
			c := answer(t, ch, "alice", "alice-secret", 1)
			return stripParams(c, "cnonce", "nc")
		}, 400},
		{"an algorithm not offered", contact, func(ch string) string {
			return strings.Replace(answer(t, ch, "alice", "alice-secret", 1), "algorithm=MD5", "algorithm=SHA-999", 1)
		}, 401},
		{"Basic", contact, func(string) string { return "Basic YWxpY2U6YWxpY2Utc2VjcmV0" }, 401},
		{"another realm", contact, func(ch string) string {
			return strings.Replace(answer(t, ch, "alice", "alice-secret", 1), `realm="sori.test"`, `realm="evil.example.org"`, 1)
		}, 401},
		{"a forged nonce", contact, func(ch string) string {
			return answer(t, strings.Replace(ch, `nonce="`, `nonce="AAAA`, 1), "alice", "alice-secret", 1)
		}, 401},
		{"a huge unknown username", contact, func(ch string) string {
			return answer(t, ch, strings.Repeat("u", 8000), "alice-secret", 1)
		}, 401},
		{"a contact pointing at sori itself", []string{"Contact: <sip:alice@127.0.0.1:5060>", "Expires: 600"}, func(ch string) string {
			return answer(t, ch, "alice", "alice-secret", 1)
		}, 403},
		{"a contact naming sori's domain", []string{"Contact: <sip:alice@sori.test>", "Expires: 600"}, func(ch string) string {
			return answer(t, ch, "alice", "alice-secret", 1)
		}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "MD5")
			r := request{user: "alice", cseq: 1, headers: tt.headers}
			res := h.send(r.raw(""))
			if res.StatusCode != 401 {
				t.Fatalf("unauthenticated: %d", res.StatusCode)
			}
			r.cseq++
			res = h.send(r.raw(tt.auth(res.GetHeader("WWW-Authenticate").Value())))
			if res.StatusCode != tt.want {
				t.Fatalf("got %d %s, want %d", res.StatusCode, res.Reason, tt.want)
			}
			if bs, _ := h.store.Lookup(context.Background(), "alice@sori.test", h.now); len(bs) != 0 {
				t.Fatalf("stored %v", bs)
			}
		})
	}
}

// A REGISTER naming one contact twice binds it once, as the last naming
// says (store.Apply panicked on it: FuzzRegister).
func TestContactNamedTwice(t *testing.T) {
	for _, hs := range [][]string{
		{"Contact: <sip:alice@10.0.0.1>, <sip:alice@10.0.0.1>;expires=1200"},
		{"Contact: <sip:alice@10.0.0.1>;expires=0", "Contact: <sip:alice@10.0.0.1>;expires=1200"},
	} {
		h := newHarness(t)
		res := h.register(request{user: "alice", cseq: 1, headers: hs}, "alice-secret")
		if res.StatusCode != 200 {
			t.Fatalf("%q: %d %s", hs, res.StatusCode, res.Reason)
		}
		if cs := contacts(res); len(cs) != 1 || !strings.Contains(cs[0], "expires=1200") {
			t.Fatalf("%q: bound %v", hs, cs)
		}
	}
}

// stripParams removes name=value parameters from a credentials value.
func stripParams(cred string, names ...string) string {
	head, rest, _ := strings.Cut(cred, " ")
	var keep []string
	for _, p := range strings.Split(rest, ",") {
		k, _, _ := strings.Cut(strings.TrimSpace(p), "=")
		drop := false
		for _, n := range names {
			if strings.EqualFold(k, n) {
				drop = true
			}
		}
		if !drop {
			keep = append(keep, strings.TrimSpace(p))
		}
	}
	return head + " " + strings.Join(keep, ", ")
}

// A REGISTER using SIP Outbound (Supported: outbound, a Contact with
// +sip.instance and reg-id) gets Require: outbound and the Flow-Timer
// (RFC 5626 §6); without Supported: outbound, or without reg-id, neither.
func TestOutboundRegistration(t *testing.T) {
	inst := `;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"`
	for _, tt := range []struct {
		name     string
		headers  []string
		outbound bool
	}{
		{"outbound", []string{"Supported: path, outbound", "Contact: <sip:alice@192.168.1.20:5060;ob>" + inst + ";reg-id=1"}, true},
		{"no Supported", []string{"Contact: <sip:alice@192.168.1.20:5060>" + inst + ";reg-id=1"}, false},
		{"no reg-id", []string{"Supported: outbound", "Contact: <sip:alice@192.168.1.20:5060>" + inst}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.register(request{user: "alice", callID: "ob-" + tt.name, cseq: 1, headers: tt.headers}, "alice-secret")
			req, ft := res.GetHeader("Require"), res.GetHeader("Flow-Timer")
			if res.StatusCode != 200 || (req != nil && req.Value() == "outbound") != tt.outbound || (ft != nil) != tt.outbound {
				t.Fatalf("%d Require %v Flow-Timer %v", res.StatusCode, req, ft)
			}
			if tt.outbound && ft.Value() != "120" {
				t.Fatalf("Flow-Timer %s, want the default 120", ft.Value())
			}
		})
	}
}

// RFC 8599 §5.2: a Contact with push parameters for a provider sori
// serves is bound with them and the 200 says so in Feature-Caps; a
// provider it does not serve gets 555; a query lists what it serves.
func TestPushRegistration(t *testing.T) {
	const apns = "Contact: <sip:alice@192.168.1.20:5060;pn-provider=apns;pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.voip>"
	for _, tt := range []struct {
		name    string
		contact string
		code    int
		caps    []string
		push    bool
	}{
		{"apns", apns, 200, []string{`*;+sip.pns="apns";+sip.pnsreg="130"`}, true},
		{"device refreshes itself", apns + ";+sip.pnsreg", 200, []string{`*;+sip.pns="apns";+sip.pnsreg="130"`}, true},
		{"a provider sori does not serve", "Contact: <sip:alice@192.168.1.20:5060;pn-provider=webpush;pn-prid=abc>", 555, nil, false},
		{"no device token", "Contact: <sip:alice@192.168.1.20:5060;pn-provider=fcm>;expires=600", 555, nil, false},
		{"a query", "Contact: <sip:alice@192.168.1.20:5060;pn-provider>", 200, []string{`*;+sip.pns="apns"`, `*;+sip.pns="fcm"`}, false},
		{"no push", "Contact: <sip:alice@192.168.1.20:5060>", 200, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.register(request{user: "alice", callID: "pn-" + tt.name, cseq: 1, headers: []string{tt.contact}}, "alice-secret")
			var caps []string
			for _, fc := range res.GetHeaders("Feature-Caps") {
				caps = append(caps, fc.Value())
			}
			if res.StatusCode != tt.code || !slices.Equal(caps, tt.caps) {
				t.Fatalf("%d %s, Feature-Caps %q; want %d, %q", res.StatusCode, res.Reason, caps, tt.code, tt.caps)
			}
			bs, _ := h.store.Lookup(context.Background(), "alice@sori.test", h.now)
			if tt.code != 200 {
				if len(bs) != 0 {
					t.Fatalf("refused, yet bound: %+v", bs)
				}
				return
			}
			if len(bs) != 1 || (bs[0].PushProvider != "") != tt.push {
				t.Fatalf("bindings %+v", bs)
			}
			if tt.push && (bs[0].PushPRID != "00fc13adff78512" || bs[0].PushParam != "ABCD1234.com.example.voip" ||
				bs[0].PushSelfRefresh != strings.Contains(tt.contact, "+sip.pnsreg")) {
				t.Fatalf("push binding %+v", bs[0])
			}
		})
	}
}

// A woken app re-registers from wherever it is now with the same push
// token: its binding is replaced, not added beside the old one.
func TestPushTokenReplacesOldContact(t *testing.T) {
	h := newHarness(t)
	pn := ";pn-provider=fcm;pn-prid=dev-token-1;pn-param=proj-1"
	h.register(request{user: "alice", callID: "asleep", cseq: 1, headers: []string{"Contact: <sip:alice@192.168.1.20:5060;transport=tcp" + pn + ">"}}, "alice-secret")
	res := h.register(request{user: "alice", callID: "woken", cseq: 1, headers: []string{"Contact: <sip:alice@10.20.30.40:41234;transport=tcp" + pn + ">"}}, "alice-secret")
	if got := contacts(res); len(got) != 1 || !strings.HasPrefix(got[0], "<sip:alice@10.20.30.40:41234") {
		t.Fatalf("contacts %q, want only the woken app's", got)
	}
}
