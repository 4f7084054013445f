package proxy

import "testing"

// BenchmarkForkGroups is an INVITE to a user with one registration: its
// targets put in fork groups.
func BenchmarkForkGroups(b *testing.B) {
	ts := []target{{q: -1, dest: "203.0.113.5:40000", transport: "UDP"}}
	b.ReportAllocs()
	for b.Loop() {
		if g := forkGroups(ts); len(g) != 1 {
			b.Fatal(g)
		}
	}
}
