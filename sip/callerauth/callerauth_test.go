package callerauth

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/local"
)

func newPlugin(t *testing.T) Plugin {
	t.Helper()
	d, err := digest.New("sori.test", []string{"MD5"}, []byte("callerauth-test-secret"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	users := auth.Directory{Static: map[string]store.Subscriber{
		"alice": auth.NewSubscriber("alice", "sori.test", "alice-secret"),
		"bob":   auth.NewSubscriber("bob", "sori.test", "bob-secret"),
	}}
	return Plugin{
		Self: local.New("sori.test", "127.0.0.1:5060"),
		Auth: auth.New(d, users, nil),
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// serve runs req through p; it returns the response (nil when passed on)
// and, when passed on, the user the next link saw and the request it got.
func serve(t *testing.T, p Plugin, req *sip.Request) (res *sip.Response, user string, passed *sip.Request) {
	t.Helper()
	res, _, seen := chaintest.ServeAs(t, p, &chain.Request{Request: req})
	if seen != nil {
		user, passed = seen.Caller.User, seen.Request
	}
	return res, user, passed
}

// answer computes Proxy-Authorization for the challenge in res.
func answer(t *testing.T, res *sip.Response, method, ruri, user, password string) string {
	t.Helper()
	h := res.GetHeader("Proxy-Authenticate")
	if res.StatusCode != 407 || h == nil {
		t.Fatalf("want a 407 challenge, got %d", res.StatusCode)
	}
	ch, err := client.ParseChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	cr, err := client.Digest(ch, client.Options{Method: method, URI: ruri, Username: user, Password: password, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	return "Proxy-Authorization: " + cr.String()
}

func TestCallerMustAuthenticateAsTheFromUser(t *testing.T) {
	tests := []struct {
		name, method, ruri, user, password string
		code                               int // 0: passed on as user
	}{
		{"alice calls bob", "INVITE", "sip:bob@sori.test", "alice", "alice-secret", 0},
		{"alice messages bob", "MESSAGE", "sip:bob@sori.test", "alice", "alice-secret", 0},
		{"alice asks bob's phone for OPTIONS", "OPTIONS", "sip:bob@sori.test", "alice", "alice-secret", 0},
		{"alice calls out of the domain", "INVITE", "sip:+821012345678@carrier.example", "alice", "alice-secret", 0},
		{"bob's credentials with alice's From", "INVITE", "sip:bob@sori.test", "bob", "bob-secret", 403},
		{"wrong password: challenged again", "INVITE", "sip:bob@sori.test", "alice", "guess", 407},
		{"unknown user: challenged again", "SUBSCRIBE", "sip:bob@sori.test", "mallory", "x", 407},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlugin(t)
			res, _, _ := serve(t, p, chaintest.Request(t, chaintest.Raw(tt.method, tt.ruri)))
			if res == nil || res.StatusCode != 407 {
				t.Fatalf("no challenge first: %v", res)
			}
			cred := answer(t, res, tt.method, tt.ruri, tt.user, tt.password)
			res, user, passed := serve(t, p, chaintest.Request(t, chaintest.Raw(tt.method, tt.ruri, cred, "CSeq: 2 "+tt.method)))
			if tt.code != 0 {
				if res == nil || res.StatusCode != tt.code || passed != nil {
					t.Fatalf("want %d, got %v (passed %v)", tt.code, res, passed != nil)
				}
				return
			}
			if res != nil || passed == nil || user != tt.user {
				t.Fatalf("not passed on as %s: %v, user %q", tt.user, res, user)
			}
			if passed.GetHeader("Proxy-Authorization") != nil {
				t.Fatal("credentials forwarded to the next hop")
			}
		})
	}
}

func TestWhatIsNotChallenged(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		code int // 0: passed on
	}{
		{"another domain calls our user", chaintest.Raw("INVITE", "sip:bob@sori.test", "From: <sip:carol@carrier.example>;tag=9"), 0},
		{"another domain relays through us", chaintest.Raw("INVITE", "sip:dave@elsewhere.example", "From: <sip:carol@carrier.example>;tag=9"), 404},
		{"another domain to a phone on our host", chaintest.Raw("MESSAGE", "sip:bob@127.0.0.1:5099", "From: <sip:carol@carrier.example>;tag=9"), 404},
		{"in-dialog BYE", chaintest.Raw("BYE", "sip:bob@198.51.100.7", "To: <sip:bob@sori.test>;tag=b1"), 0},
		{"ACK", chaintest.Raw("ACK", "sip:bob@sori.test"), 0},
		{"CANCEL", chaintest.Raw("CANCEL", "sip:bob@sori.test"), 0},
		{"REGISTER (the registrar's 401)", chaintest.Raw("REGISTER", "sip:sori.test"), 0},
		{"OPTIONS to sori itself", chaintest.Raw("OPTIONS", "sip:sori.test"), 0},
		{"OPTIONS to a user from our domain", chaintest.Raw("OPTIONS", "sip:bob@sori.test"), 407},
		{"REFER out of dialog", chaintest.Raw("REFER", "sip:bob@sori.test"), 407},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := chaintest.Request(t, tt.raw)
			if f := req.GetHeaders("From"); len(f) > 1 {
				req.RemoveHeader("From") // the override comes second
			}
			res, _, passed := serve(t, newPlugin(t), req)
			switch {
			case tt.code == 0 && (res != nil || passed == nil):
				t.Fatalf("answered %v", res)
			case tt.code != 0 && (res == nil || res.StatusCode != tt.code || passed != nil):
				t.Fatalf("want %d, got %v", tt.code, res)
			}
		})
	}
}
