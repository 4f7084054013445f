package digest

import (
	"strings"
	"testing"
	"time"
)

// quote writes v as an RFC 3261 quoted-string.
func quote(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// format writes c as an Authorization value, every field quoted.
func format(c Credentials) string {
	var parts []string
	for _, kv := range [][2]string{{"username", c.Username}, {"realm", c.Realm}, {"nonce", c.Nonce}, {"uri", c.URI}, {"response", c.Response},
		{"algorithm", c.Algorithm}, {"cnonce", c.Cnonce}, {"opaque", c.Opaque}, {"qop", c.QOP}, {"nc", c.NC}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+quote(kv[1]))
		}
	}
	return "Digest " + strings.Join(parts, ", ")
}

// FuzzCredentials: any Authorization value parses or is refused without
// panicking; what parses, written back with every value quoted, parses
// to the same credentials; Verify of anything answers without panicking,
// and OK only once for one nonce-count.
func FuzzCredentials(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	a, err := New("sori.test", []string{"MD5", "SHA-256"}, []byte("fuzz-secret-0123456789"), 5*time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	a.SetClock(func() time.Time { return now })
	lookup := func(alg Algorithm) (string, bool, error) {
		return HA1(alg, "alice", "sori.test", "alice-secret"), true, nil
	}
	for _, ch := range a.Challenges(false) {
		nonce := ch[strings.Index(ch, `nonce="`)+7:]
		nonce = nonce[:strings.IndexByte(nonce, '"')]
		alg := ch[strings.Index(ch, "algorithm=")+10:]
		alg = alg[:strings.IndexByte(alg, ',')]
		p, _ := ParseAlgorithm(alg)
		ha1, _, _ := lookup(p)
		ha2 := hexHash(p, "REGISTER", ":", "sip:sori.test")
		resp := hexHash(p, ha1, ":", nonce, ":", "00000001", ":", "c0ffee", ":", "auth", ":", ha2)
		f.Add(`Digest username="alice", realm="sori.test", nonce="` + nonce + `", uri="sip:sori.test", response="` + resp +
			`", algorithm=` + alg + `, cnonce="c0ffee", qop=auth, nc=00000001`)
	}
	f.Add(`Digest username="alice", realm="sori.test",nonce="abc", uri="sip:127.0.0.1:5060", response="0123", algorithm=MD5, cnonce="x\"y", qop=auth, nc=0000000A, opaque=""`)
	for _, bad := range []string{"Basic abc", `Digest username="open`, "Digest =x", "", "digest\t", `Digest a="\`, `Digest username="a"xyz, realm=b`, "Digest ,,,, ,", "DIGEST nc=ffffffff0"} {
		f.Add(bad)
	}
	f.Fuzz(func(t *testing.T, value string) {
		c, err := ParseCredentials(value)
		if sel, ok := a.Select([]string{value}); ok != (err == nil && c.Realm == "sori.test") || ok && sel != c {
			t.Fatalf("Select %+v %v, ParseCredentials %+v %v", sel, ok, c, err)
		}
		if err != nil {
			return
		}
		if again, err := ParseCredentials(format(c)); c != (Credentials{}) && (err != nil || again != c) {
			t.Fatalf("%q parsed as %+v; written as %q it parses as %+v, %v", value, c, format(c), again, err)
		}
		res, _ := a.Verify("REGISTER", c, lookup)
		if res == OK {
			if res, _ := a.Verify("REGISTER", c, lookup); res == OK {
				t.Fatalf("the same credentials verify twice: %+v", c)
			}
		}
	})
}
