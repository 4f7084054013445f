package nodes

import (
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	tk := NewTokens([]byte("shared-secret-0123456789"))
	f := Flow{Transport: "TCP", Addr: "198.51.100.7:40112"}
	tok := tk.Mint("node-b", f)
	if !strings.HasPrefix(tok, tokenPrefix) || strings.ToLower(tok) != tok {
		t.Fatalf("token %q: want lower case with prefix %q", tok, tokenPrefix)
	}
	if got, ok := tk.Open("node-b", tok); !ok || got != f {
		t.Fatalf("Open = %+v %v, want %+v", got, ok, f)
	}
	upper := tokenPrefix + strings.ToUpper(tok[len(tokenPrefix):])
	if got, ok := tk.Open("node-b", upper); !ok || got != f {
		t.Fatalf("a token whose case was folded: %+v %v", got, ok)
	}
	// One bit changed anywhere in the payload, or another node, another
	// secret: not a token.
	flip := []byte(tok)
	flip[len(flip)-3] ^= 1
	other := NewTokens([]byte("another-secret-0123456789"))
	for _, c := range []struct {
		name, node, token string
		tk                Tokens
	}{
		{"another node's", "node-c", tok, tk},
		{"altered", "node-b", string(flip), tk},
		{"another secret", "node-b", tok, other},
		{"no prefix", "node-b", tok[len(tokenPrefix):], tk},
		{"not base32", "node-b", tokenPrefix + "!!!!", tk},
		{"too short", "node-b", tokenPrefix + "aaaa", tk},
		{"empty", "node-b", "", tk},
		{"a user name", "node-b", "bob", tk},
	} {
		if got, ok := c.tk.Open(c.node, c.token); ok {
			t.Errorf("%s: opened as %+v", c.name, got)
		}
	}
}

// A token minted over a flow that is not one (a bad transport or
// address) is never opened, even with a valid MAC.
func TestTokenPayloadChecked(t *testing.T) {
	tk := NewTokens([]byte("shared-secret-0123456789"))
	for _, f := range []Flow{{"SCTP", "198.51.100.7:5060"}, {"UDP", "phone.example:5060"}, {"TCP", ""}} {
		if got, ok := tk.Open("n", tk.Mint("n", f)); ok {
			t.Errorf("%+v opened as %+v", f, got)
		}
	}
}
