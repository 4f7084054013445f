package sdes

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
)

func encodeStd(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestParse(t *testing.T) {
	key30 := "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
	tests := []struct {
		in      string
		want    string // String(false) of the result; "" for an error
		wantErr string
	}{
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30, "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30, ""},
		{"2 aes_cm_128_hmac_sha1_32 inline:" + key30 + "|2^20|1:4 UNENCRYPTED_SRTCP KDR=0", "2 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "|2^20|1:4 UNENCRYPTED_SRTCP KDR=0", ""},
		{"3 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|3:2 UNENCRYPTED_SRTP UNAUTHENTICATED_SRTP", "3 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|3:2 UNENCRYPTED_SRTP UNAUTHENTICATED_SRTP", ""},
		// An MKI longer than 8 bytes is written back whole (FuzzCrypto).
		{"4 AEAD_AES_256_GCM inline:" + strings.Repeat("A", 59) + "|7:128", "4 AEAD_AES_256_GCM inline:" + strings.Repeat("A", 59) + "|7:128", ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|18446744073709551615:9", "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|18446744073709551615:9", ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30[:20], "", "not 30 bytes"},
		{"1 AES_CM_128_HMAC_SHA1_80 uri:http://k", "", "not inline"},
		{"x AES_CM_128_HMAC_SHA1_80 inline:" + key30, "", "bad tag"},
		{"1 AES_CM_128_HMAC_SHA1_80", "", "want TAG"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|300:1", "", "bad MKI"},
		{"1 F8_128_HMAC_SHA1_80 inline:" + key30, "", "unsupported"},
	}
	for _, tt := range tests {
		c, err := Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) = %v, want error with %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := c.String(false); got != tt.want {
			t.Errorf("Parse(%q).String() = %q", tt.in, got)
		}
	}
	if _, err := Parse("1 F8_128_HMAC_SHA1_80 inline:" + key30); !errors.Is(err, ErrUnknownSuite) {
		t.Errorf("F8: %v", err)
	}
	c, _ := Parse("1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:4")
	if len(c.MKI) != 4 || c.MKI[3] != 1 {
		t.Errorf("MKI %x", c.MKI)
	}
}

func TestPadding(t *testing.T) {
	c, err := Generate(1, Suites[4], Params{}) // AES_CM_128: 30 bytes, 40 characters, no padding either way
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.String(true), "=") {
		t.Errorf("30-byte key padded: %s", c.String(true))
	}
	g, _ := Generate(1, Suites[1], Params{}) // AEAD_AES_128_GCM: 28 bytes
	unpadded, padded := g.String(false), g.String(true)
	if strings.Contains(unpadded, "=") || !strings.HasSuffix(padded, "==") {
		t.Errorf("pad: %q / %q", unpadded, padded)
	}
	for _, s := range []string{unpadded, padded} {
		back, err := Parse(s)
		if err != nil || string(back.Key) != string(g.Key) || string(back.Salt) != string(g.Salt) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	f := ParseFlags([]string{"no-AES_256_CM_HMAC_SHA1_32", "pad"}, []string{"SDES-unencrypted_srtcp", "SDES-only-AES_CM_128_HMAC_SHA1_80", "strict-source", "SDES-order:AES_CM_128_HMAC_SHA1_32;AEAD_AES_128_GCM", "SDES-offerer_pref:AES_256_CM_HMAC_SHA1_80"})
	if !f.Pad || !f.No["AES_256_CM_HMAC_SHA1_32"] || !f.Only["AES_CM_128_HMAC_SHA1_80"] || f.UnencryptedSRTCP == nil || !*f.UnencryptedSRTCP || f.UnencryptedSRTP != nil {
		t.Errorf("%+v", f)
	}
	if len(f.Order) != 2 || f.Order[1] != "AEAD_AES_128_GCM" || len(f.Pref) != 1 {
		t.Errorf("order %v pref %v", f.Order, f.Pref)
	}
	if g := ParseFlags(nil, []string{"SDES-off"}); !g.Off {
		t.Error("SDES-off")
	}
	if g := ParseFlags([]string{"disable"}, []string{"pad crypto"}); !g.Off || !g.Pad {
		t.Error("disable / pad crypto")
	}
}

func names(cs []Crypto) string {
	var out []string
	for _, c := range cs {
		out = append(out, strconv.Itoa(c.Tag)+":"+c.Suite.Name)
	}
	return strings.Join(out, " ")
}

func TestOffer(t *testing.T) {
	a, _ := Generate(1, mustSuite(t, "AES_CM_128_HMAC_SHA1_80"), Params{UnencryptedSRTCP: true})
	b, _ := Generate(2, mustSuite(t, "AES_CM_128_HMAC_SHA1_32"), Params{})
	n, _ := Generate(3, mustSuite(t, "NULL_HMAC_SHA1_80"), Params{})
	received := []Crypto{a, b, n}
	tests := []struct {
		name  string
		flags []string
		recv  []Crypto
		want  string
	}{
		{"plain offerer: every suite but NULL", nil, nil, "1:AEAD_AES_256_GCM 2:AEAD_AES_128_GCM 3:AES_256_CM_HMAC_SHA1_80 4:AES_256_CM_HMAC_SHA1_32 5:AES_CM_128_HMAC_SHA1_80 6:AES_CM_128_HMAC_SHA1_32"},
		{"received first, same tags, then the rest", nil, received, "1:AES_CM_128_HMAC_SHA1_80 2:AES_CM_128_HMAC_SHA1_32 3:NULL_HMAC_SHA1_80 4:AEAD_AES_256_GCM 5:AEAD_AES_128_GCM 6:AES_256_CM_HMAC_SHA1_80 7:AES_256_CM_HMAC_SHA1_32"},
		{"nonew", []string{"SDES-nonew"}, received, "1:AES_CM_128_HMAC_SHA1_80 2:AES_CM_128_HMAC_SHA1_32 3:NULL_HMAC_SHA1_80"},
		{"no-", []string{"SDES-no-AES_CM_128_HMAC_SHA1_32", "SDES-no-AEAD_AES_256_GCM", "SDES-nonew"}, received, "1:AES_CM_128_HMAC_SHA1_80 3:NULL_HMAC_SHA1_80"},
		{"only- adds and drops", []string{"SDES-only-AES_CM_128_HMAC_SHA1_32", "SDES-only-AEAD_AES_128_GCM"}, received, "2:AES_CM_128_HMAC_SHA1_32 4:AEAD_AES_128_GCM"},
		{"only- over no-", []string{"SDES-only-AES_CM_128_HMAC_SHA1_80", "SDES-no-AES_CM_128_HMAC_SHA1_80"}, nil, "1:AES_CM_128_HMAC_SHA1_80"},
		{"order", []string{"SDES-order:AES_CM_128_HMAC_SHA1_32;AES_256_CM_HMAC_SHA1_80", "SDES-nonew", "SDES-only-AES_CM_128_HMAC_SHA1_80", "SDES-only-AES_CM_128_HMAC_SHA1_32"}, received, "2:AES_CM_128_HMAC_SHA1_32 1:AES_CM_128_HMAC_SHA1_80"},
		{"off", []string{"SDES-off"}, received, ""},
	}
	for _, tt := range tests {
		out, err := ParseFlags(nil, tt.flags).Offer(tt.recv)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(out); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
		for _, c := range out {
			for _, r := range tt.recv {
				if string(c.Key) == string(r.Key) {
					t.Errorf("%s: the offerer's key was reused", tt.name)
				}
			}
		}
	}
	out, _ := ParseFlags(nil, nil).Offer(received)
	if !out[0].UnencryptedSRTCP || out[1].UnencryptedSRTCP {
		t.Errorf("session parameters not copied per suite: %v", names(out))
	}
	out, _ = ParseFlags(nil, []string{"SDES-encrypted_srtcp", "SDES-unauthenticated_srtp", "SDES-lifetime"}).Offer(received)
	if out[0].UnencryptedSRTCP || !out[0].UnauthenticatedSRTP || !strings.Contains(out[0].String(false), "|2^31") {
		t.Errorf("forced parameters: %s", out[0].String(false))
	}
}

func mustSuite(t *testing.T, n string) Suite {
	t.Helper()
	s, ok := SuiteByName(n)
	if !ok {
		t.Fatal(n)
	}
	return s
}

func TestPick(t *testing.T) {
	a, _ := Generate(1, mustSuite(t, "AES_CM_128_HMAC_SHA1_80"), Params{})
	b, _ := Generate(2, mustSuite(t, "AES_CM_128_HMAC_SHA1_32"), Params{})
	offered := []Crypto{a, b}
	for _, tt := range []struct {
		flags  []string
		chosen string
		tag    int
	}{
		{nil, "AES_CM_128_HMAC_SHA1_32", 2},
		{nil, "AEAD_AES_128_GCM", 1},
		{[]string{"SDES-offerer_pref:AES_256_CM_HMAC_SHA1_80;AES_CM_128_HMAC_SHA1_32"}, "AES_CM_128_HMAC_SHA1_80", 2},
	} {
		c, ok := ParseFlags(nil, tt.flags).Pick(offered, tt.chosen)
		if !ok || c.Tag != tt.tag {
			t.Errorf("%v %s: picked %d", tt.flags, tt.chosen, c.Tag)
		}
	}
	if _, ok := (Flags{}).Pick(nil, "x"); ok {
		t.Error("picked from nothing")
	}
}
