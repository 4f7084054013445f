package proxy

import "testing"

func TestRankPicksTheResponseRFC3261Prefers(t *testing.T) {
	tests := []struct {
		name          string
		better, worse int
	}{
		{"6xx beats everything", 603, 302},
		{"6xx beats a definite 4xx", 600, 486},
		{"redirect beats 4xx", 302, 486},
		{"busy beats a timeout from another contact", 486, 408},
		{"not found beats temporarily unavailable", 404, 480},
		{"busy beats a flow gone on another node", 486, 430},
		{"any 4xx beats 5xx", 480, 503},
		{"5xx beats nothing", 500, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if rank(tt.better) >= rank(tt.worse) {
				t.Fatalf("rank(%d)=%d, rank(%d)=%d", tt.better, rank(tt.better), tt.worse, rank(tt.worse))
			}
		})
	}
}
