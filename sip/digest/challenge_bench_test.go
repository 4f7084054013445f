package digest

import (
	"testing"
	"time"
)

// BenchmarkChallenges is the 407 every INVITE gets first: a nonce issued
// and its Proxy-Authenticate values written (MD5 and SHA-256).
func BenchmarkChallenges(b *testing.B) {
	a, _ := New("sori.test", []string{"MD5", "SHA-256"}, []byte("0123456789abcdef0123456789abcdef"), time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		if len(a.Challenges(false)) != 2 {
			b.Fatal("challenges")
		}
	}
}
