package scanner

import "testing"

func TestMatch(t *testing.T) {
	m := New(Default)
	tests := []struct {
		ua   string
		want bool
	}{
		{"friendly-scanner", true},
		{"Friendly-Scanner/1.0", true},
		{"sipcli/v1.8", true},
		{"VaxSIPUserAgent/3.1", true},
		{"iWar", true},
		{"SIVuS PBX", true},
		{"smap 0.6.0", true},
		{"sundayddr", true},
		{"Linphone/5.2.0 (belle-sip/5.2.0)", false},
		{"Zoiper rv2.10.19.4", false},
		{"baresip v3.10.0 (x86_64/linux)", false},
		{"", false},
		{string(make([]byte, 300)) + "SIPVicious", true}, // longer than the stack buffer
	}
	for _, tt := range tests {
		if got := m.Match(tt.ua); got != tt.want {
			t.Errorf("Match(%q) = %v, want %v", tt.ua, got, tt.want)
		}
	}
	if New([]string{" ", ""}).Match("friendly-scanner") {
		t.Error("an empty list matched")
	}
	if !New([]string{"EvilTool"}).Match("eviltool 2") {
		t.Error("a configured pattern is not case-insensitive")
	}
}

func BenchmarkMatch(b *testing.B) {
	m := New(Default)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m.Match("Linphone/5.2.0 (belle-sip/5.2.0)")
	}
}
