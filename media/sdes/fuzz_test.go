package sdes

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const seedKey30 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"

// seedCrypto adds every a=crypto value of testdata/sdp and of the torture
// messages, and a few of each form Parse reads.
func seedCrypto(f *testing.F, add func(string)) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "sdp", "*.sdp"))
	more, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "torture", "cases", "*", "*"))
	for _, name := range append(files, more...) {
		b, _ := os.ReadFile(name)
		for _, l := range bytes.Split(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(bytes.TrimSpace(l), []byte("a=crypto:")); ok {
				add(string(v))
			}
		}
	}
	for _, v := range []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + seedKey30,
		"2 aes_cm_128_hmac_sha1_32 inline:" + seedKey30 + "|2^20|1:4 UNENCRYPTED_SRTCP KDR=0",
		"3 AES_CM_128_HMAC_SHA1_80 inline:" + seedKey30 + "==|3:2;inline:" + seedKey30 + " UNENCRYPTED_SRTP UNAUTHENTICATED_SRTP",
		"4 AEAD_AES_256_GCM inline:" + strings.Repeat("A", 59) + "|7:128",
		"5 NULL_HMAC_SHA1_32 inline:" + seedKey30 + "|18446744073709551615:8",
		"1 F8_128_HMAC_SHA1_80 inline:" + seedKey30,
	} {
		add(v)
	}
}

// FuzzCrypto: Parse never panics, and what it takes formats back to a
// value it parses to the same crypto (the canonical form), with or
// without padding; its SRTP context builds.
func FuzzCrypto(f *testing.F) {
	seedCrypto(f, func(v string) { f.Add(v) })
	f.Fuzz(func(t *testing.T, value string) {
		c, err := Parse(value)
		if err != nil {
			return
		}
		if len(c.Key) != c.Suite.KeyLen || len(c.Salt) != c.Suite.SaltLen {
			t.Fatalf("key %d, salt %d bytes for %s", len(c.Key), len(c.Salt), c.Suite.Name)
		}
		for _, pad := range []bool{false, true} {
			s := c.String(pad)
			again, err := Parse(s)
			if err != nil {
				t.Fatalf("Parse(%q) of %q: %v", s, value, err)
			}
			if !reflect.DeepEqual(again, c) {
				t.Fatalf("round trip of %q through %q:\n%+v\n%+v", value, s, c, again)
			}
		}
		if _, err := c.Context(); err != nil {
			t.Fatalf("context of %q: %v", value, err)
		}
	})
}

// FuzzFlags: any SDES flags over any offered cryptos make an offer, a
// pick and an answer without panicking; what is made has the tags and
// suites the rules say.
func FuzzFlags(f *testing.F) {
	seedCrypto(f, func(v string) { f.Add("", "", v) })
	f.Add("off", "", "")
	f.Add("no-AES_CM_128_HMAC_SHA1_32,order:AES_CM_128_HMAC_SHA1_32;AEAD_AES_128_GCM", "SDES-pad,pad crypto,SDES-lifetime", "1 AES_CM_128_HMAC_SHA1_80 inline:"+seedKey30)
	f.Add("only-NULL_HMAC_SHA1_80,nonew,unencrypted_srtp,encrypted_srtcp", "SDES-offerer_pref:AES_CM_128_HMAC_SHA1_80,SDES-unauthenticated_srtp", "999999999 AES_CM_128_HMAC_SHA1_80 inline:"+seedKey30)
	f.Fuzz(func(t *testing.T, sdesList, flags, cryptos string) {
		fl := ParseFlags(strings.Split(sdesList, ","), strings.Split(flags, ","))
		offered, err := ParseAll(strings.Split(cryptos, "\n"))
		if err != nil {
			return
		}
		out, err := fl.Offer(offered)
		if err != nil {
			t.Fatal(err)
		}
		if fl.Off && len(out) != 0 {
			t.Fatalf("off, yet %d cryptos offered", len(out))
		}
		names := map[string]bool{}
		for _, c := range out {
			if names[c.Suite.Name] {
				t.Fatalf("%s offered twice", c.Suite.Name)
			}
			names[c.Suite.Name] = true
			if _, err := Parse(c.String(fl.Pad)); err != nil {
				t.Fatalf("offered %q: %v", c.String(fl.Pad), err)
			}
		}
		chosen := ""
		if len(out) > 0 {
			chosen = out[len(out)-1].Suite.Name
		}
		c, ok := fl.Pick(offered, chosen)
		if ok != (len(offered) > 0) {
			t.Fatalf("Pick %v of %d offered", ok, len(offered))
		}
		if !ok {
			return
		}
		a, err := fl.Answer(c)
		if err != nil {
			t.Fatal(err)
		}
		if a.Tag != c.Tag || a.Suite != c.Suite {
			t.Fatalf("answer %d %s to %d %s", a.Tag, a.Suite.Name, c.Tag, c.Suite.Name)
		}
		if _, err := Parse(a.String(fl.Pad)); err != nil {
			t.Fatalf("answered %q: %v", a.String(fl.Pad), err)
		}
	})
}
