package ng

import (
	"reflect"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/bencode"
)

// samples are the shapes ng messages take.
var samples = []Dict{
	{"command": "ping"},
	{"result": "pong"},
	{"command": "offer", "call-id": "a@b", "from-tag": "t1", "sdp": "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "flags": []any{"trust-address", "strict-source"},
		"replace": []any{"origin", "session-connection"}, "received-from": []any{"IP4", "1.2.3.4"}, "ICE": "remove"},
	{"result": "ok", "created": int64(1795548000), "tags": map[string]any{"t1": map[string]any{"tag": "t1", "medias": []any{
		map[string]any{"index": int64(1), "streams": []any{map[string]any{"local port": int64(30000), "stats": map[string]any{"packets": int64(0), "bytes": int64(1 << 40)}}}}}}}},
	{"result": "error", "error-reason": "Unknown call-id", "empty": "", "neg": int64(-42), "list": []any{}},
	{"unicode": "안녕 소리", "binary": "\x00\xff:e"},
}

func TestCodecAgreesWithTheLibrary(t *testing.T) {
	for i, d := range samples {
		ours, err := Encode("c", d)
		if err != nil {
			t.Fatal(err)
		}
		lib, err := bencode.Marshal(map[string]any(d))
		if err != nil {
			t.Fatal(err)
		}
		if string(ours[2:]) != string(lib) {
			t.Fatalf("sample %d: encoded\n%q\nlibrary\n%q", i, ours[2:], lib)
		}
		var back any
		if err := bencode.Unmarshal(ours[2:], &back); err != nil {
			t.Fatalf("sample %d: the library cannot read ours: %v", i, err)
		}
		_, got, err := Parse(append([]byte("c "), lib...))
		if err != nil {
			t.Fatalf("sample %d: we cannot read the library's: %v", i, err)
		}
		if !reflect.DeepEqual(map[string]any(got), back) {
			t.Fatalf("sample %d: decoded\n%v\nlibrary\n%v", i, got, back)
		}
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	for _, raw := range []string{
		"d", "d3:abc", "d3:abci1", "di1ei2ee", "d3:abc99:xe", "d3:abci1x2ee", "d3:abcl", "d1:a-1:xe",
		"d1:ai-e", "d1:aie", "d1:ax", "d1:a3:abcextra", strings.Repeat("d1:a", 40) + "i1e" + strings.Repeat("e", 40),
	} {
		if _, _, err := Parse([]byte("c " + raw)); err == nil {
			t.Errorf("%q accepted", raw)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, d := range samples {
		b, _ := Encode("c", d)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cookie, d, err := Parse(b)
		if err != nil {
			return
		}
		// What parses re-encodes, and parses to the same thing.
		again, err := Encode(cookie, d)
		if err != nil {
			t.Fatal(err)
		}
		_, d2, err := Parse(again)
		if err != nil || !reflect.DeepEqual(d, d2) {
			t.Fatalf("%v / %v (%v)", d, d2, err)
		}
	})
}

func BenchmarkParseQueryReply(b *testing.B) {
	raw, _ := Encode("cookie", samples[3])
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseQueryReplyLibrary(b *testing.B) {
	raw, _ := Encode("cookie", samples[3])
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := bencode.Unmarshal(raw[7:], &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeOffer(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode("cookie", samples[2]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeOfferLibrary(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bencode.Marshal(map[string]any(samples[2])); err != nil {
			b.Fatal(err)
		}
	}
}
