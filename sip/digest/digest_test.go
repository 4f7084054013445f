package digest

import (
	"strings"
	"testing"
	"time"

	client "github.com/icholy/digest"
)

var secret = []byte("0123456789abcdef-test-secret")

func newAuth(t *testing.T, algs ...string) *Authenticator {
	t.Helper()
	a, err := New("sori.test", algs, secret, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// answer computes credentials the way an independent client library does.
func answer(t *testing.T, challenge, method, uri, user, password string, nc int) Credentials {
	t.Helper()
	ch, err := client.ParseChallenge(challenge)
	if err != nil {
		t.Fatalf("client cannot parse our challenge %q: %v", challenge, err)
	}
	cr, err := client.Digest(ch, client.Options{Method: method, URI: uri, Username: user, Password: password, Count: nc, Cnonce: "c0ffee"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCredentials(cr.String())
	if err != nil {
		t.Fatalf("parse %q: %v", cr.String(), err)
	}
	return c
}

func store(user, password string) func(Credentials) HA1Func {
	return func(c Credentials) HA1Func {
		return func(alg Algorithm) (string, bool, error) {
			if c.Username != user {
				return "", false, nil
			}
			return HA1(alg, user, "sori.test", password), true, nil
		}
	}
}

func TestChallengeOrderAndFormat(t *testing.T) {
	a := newAuth(t, "SHA-256", "MD5")
	ch := a.Challenges(false)
	if len(ch) != 2 || !strings.Contains(ch[0], "algorithm=SHA-256") || !strings.Contains(ch[1], "algorithm=MD5") {
		t.Fatalf("challenges = %q", ch)
	}
	for _, c := range ch {
		if !strings.Contains(c, `qop="auth"`) || !strings.Contains(c, `realm="sori.test"`) || strings.Contains(c, "stale") {
			t.Errorf("challenge %q", c)
		}
	}
	if got := a.Challenges(true); !strings.Contains(got[0], "stale=true") {
		t.Errorf("stale challenge %q", got[0])
	}
	if a.Challenges(false)[0] == ch[0] {
		t.Error("two challenges share a nonce")
	}
}

func TestVerify(t *testing.T) {
	lookup := store("alice", "alice-secret")
	for _, alg := range []string{"MD5", "SHA-256"} {
		t.Run(alg, func(t *testing.T) {
			a := newAuth(t, alg)
			ch := a.Challenges(false)[0]
			c := answer(t, ch, "REGISTER", "sip:sori.test", "alice", "alice-secret", 1)
			if r, err := a.Verify("REGISTER", c, lookup(c)); r != OK || err != nil {
				t.Fatalf("good credentials: %v %v", r, err)
			}
			// The same nonce-count again is a replay.
			if r, _ := a.Verify("REGISTER", c, lookup(c)); r != Replay {
				t.Fatalf("replayed nc: %v", r)
			}
			// The next nonce-count on the same nonce is fine.
			c2 := answer(t, ch, "REGISTER", "sip:sori.test", "alice", "alice-secret", 2)
			if r, _ := a.Verify("REGISTER", c2, lookup(c2)); r != OK {
				t.Fatalf("nc=2: %v", r)
			}
			bad := answer(t, ch, "REGISTER", "sip:sori.test", "alice", "wrong", 3)
			if r, _ := a.Verify("REGISTER", bad, lookup(bad)); r != Mismatch {
				t.Fatalf("wrong password: %v", r)
			}
			unknown := answer(t, ch, "REGISTER", "sip:sori.test", "mallory", "x", 4)
			if r, _ := a.Verify("REGISTER", unknown, lookup(unknown)); r != Mismatch {
				t.Fatalf("unknown user: %v", r)
			}
			// The method is part of A2: credentials for REGISTER do not work for INVITE.
			c5 := answer(t, ch, "REGISTER", "sip:sori.test", "alice", "alice-secret", 5)
			if r, _ := a.Verify("INVITE", c5, lookup(c5)); r != Mismatch {
				t.Fatalf("other method: %v", r)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	a := newAuth(t, "MD5")
	lookup := store("alice", "pw")
	ch := a.Challenges(false)[0]
	good := answer(t, ch, "REGISTER", "sip:sori.test", "alice", "pw", 1)

	other, _ := New("sori.test", []string{"MD5"}, []byte("another-secret-of-16+"), time.Minute)
	foreign := answer(t, other.Challenges(false)[0], "REGISTER", "sip:sori.test", "alice", "pw", 1)

	tests := []struct {
		name string
		edit func(c Credentials) Credentials
		want Result
	}{
		{"nonce from another secret", func(Credentials) Credentials { return foreign }, BadNonce},
		{"tampered nonce", func(c Credentials) Credentials { c.Nonce = flipMAC(c.Nonce); return c }, BadNonce},
		{"non-canonical nonce encoding", func(c Credentials) Credentials { c.Nonce = padBits(c.Nonce); return c }, BadNonce},
		{"no qop", func(c Credentials) Credentials { c.QOP = ""; return c }, BadParams},
		{"auth-int", func(c Credentials) Credentials { c.QOP = "auth-int"; return c }, BadParams},
		{"algorithm not offered", func(c Credentials) Credentials { c.Algorithm = "SHA-256"; return c }, BadParams},
		{"unknown algorithm", func(c Credentials) Credentials { c.Algorithm = "SHA-512"; return c }, BadParams},
		{"nc zero", func(c Credentials) Credentials { c.NC = "00000000"; return c }, Malformed},
		{"nc not hex", func(c Credentials) Credentials { c.NC = "0000000g"; return c }, Malformed},
		{"no nc", func(c Credentials) Credentials { c.NC = ""; return c }, Malformed},
		{"no cnonce", func(c Credentials) Credentials { c.Cnonce = ""; return c }, Malformed},
		{"no response", func(c Credentials) Credentials { c.Response = ""; return c }, Malformed},
		{"no username", func(c Credentials) Credentials { c.Username = ""; return c }, Malformed},
		{"no uri", func(c Credentials) Credentials { c.URI = ""; return c }, Malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.edit(good)
			if r, _ := a.Verify("REGISTER", c, lookup(c)); r != tt.want {
				t.Fatalf("got %v, want %v", r, tt.want)
			}
		})
	}
}

func TestStaleNonce(t *testing.T) {
	a := newAuth(t, "MD5")
	now := time.Now()
	a.now = func() time.Time { return now }
	ch := a.Challenges(false)[0]
	c := answer(t, ch, "REGISTER", "sip:sori.test", "alice", "pw", 1)
	a.now = func() time.Time { return now.Add(2 * time.Minute) }
	if r, _ := a.Verify("REGISTER", c, store("alice", "pw")(c)); r != Stale {
		t.Fatalf("expired nonce: %v", r)
	}
	// A wrong password on an expired nonce is a failure, not "stale".
	bad := answer(t, ch, "REGISTER", "sip:sori.test", "alice", "nope", 2)
	if r, _ := a.Verify("REGISTER", bad, store("alice", "pw")(bad)); r != Mismatch {
		t.Fatalf("expired nonce, wrong password: %v", r)
	}
}

// Another node with the same secret accepts the nonce: no shared state needed.
func TestNonceVerifiesOnAnotherNode(t *testing.T) {
	a, b := newAuth(t, "MD5"), newAuth(t, "MD5")
	c := answer(t, a.Challenges(false)[0], "REGISTER", "sip:sori.test", "alice", "pw", 1)
	if r, _ := b.Verify("REGISTER", c, store("alice", "pw")(c)); r != OK {
		t.Fatalf("other node: %v", r)
	}
}

func TestReplayWindowOutOfOrder(t *testing.T) {
	g := newReplayGuard(time.Minute)
	n := nonce{issued: time.Now(), key: 42}
	steps := []struct {
		nc   uint32
		want bool
	}{{1, true}, {3, true}, {2, true}, {2, false}, {3, false}, {70, true}, {5, false}, {69, true}, {69, false}, {1, false}}
	for i, s := range steps {
		if got := g.use(n, s.nc); got != s.want {
			t.Fatalf("step %d nc=%d: got %v want %v", i, s.nc, got, s.want)
		}
	}
	if !g.use(nonce{issued: n.issued, key: 43}, 1) {
		t.Fatal("another nonce shares the window")
	}
}

func TestParseCredentials(t *testing.T) {
	in := `Digest username="alice", realm="sori.test",nonce="abc", uri="sip:127.0.0.1:5060", response="0123", algorithm=MD5, cnonce="x\"y", qop=auth, nc=0000000A, opaque=""`
	c, err := ParseCredentials(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Credentials{Username: "alice", Realm: "sori.test", Nonce: "abc", URI: "sip:127.0.0.1:5060", Response: "0123", Algorithm: "MD5", Cnonce: `x"y`, QOP: "auth", NC: "0000000A"}
	if c != want {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	for _, bad := range []string{"Basic abc", `Digest username="open`, "Digest =x", "",
		// unbalanced quotes that happen to pair up further on
		`Digest username="alice, realm="sori.test", nonce="x, uri=sip:sori.test, response="`} {
		if _, err := ParseCredentials(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	if _, err := New("r", []string{"MD5"}, []byte("short"), time.Minute); err == nil {
		t.Error("short secret accepted")
	}
	if _, err := New("r", []string{"SHA-1"}, secret, time.Minute); err == nil {
		t.Error("SHA-1 accepted")
	}
}

func BenchmarkChallengeAndVerify(b *testing.B) {
	a, _ := New("sori.test", []string{"MD5", "SHA-256"}, secret, time.Minute)
	ha1 := HA1(MD5, "alice", "sori.test", "pw")
	lookup := func(Algorithm) (string, bool, error) { return ha1, true, nil }
	ch, _ := client.ParseChallenge(a.Challenges(false)[0])
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		cr, _ := client.Digest(ch, client.Options{Method: "REGISTER", URI: "sip:sori.test", Username: "alice", Password: "pw", Count: i + 1, Cnonce: "c"})
		c, _ := ParseCredentials(cr.String())
		if r, _ := a.Verify("REGISTER", c, lookup); r != OK {
			b.Fatal(r)
		}
	}
}

// flipMAC changes one character inside the MAC part of a nonce.
func flipMAC(s string) string {
	const i = 30
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// padBits sets the unused low bits of the last character: the same bytes
// when decoded leniently, so only a strict decoder rejects it.
func padBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i^1])
}
