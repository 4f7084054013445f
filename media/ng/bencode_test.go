package ng

import (
	"reflect"
	"strings"
	"testing"
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

// encoded are samples in bencode as BEP 3 defines it (dictionary keys in
// byte order, integers in decimal, strings length-prefixed), written out by
// hand.
var encoded = []struct {
	d    Dict
	want string
}{
	{samples[0], "d7:command4:pinge"},
	{samples[1], "d6:result4:ponge"},
	{Dict{"b": int64(-42), "a": []any{"x", int64(0)}, "c": map[string]any{"z": "", "y": []any{}}}, "d1:al1:xi0ee1:bi-42e1:cd1:yle1:z0:ee"},
	{samples[5], "d6:binary4:\x00\xff:e7:unicode13:안녕 소리e"},
}

func TestEncodeIsBencode(t *testing.T) {
	for i, tt := range encoded {
		got, err := Encode("c", tt.d)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[2:]) != tt.want {
			t.Fatalf("vector %d: encoded\n%q\nwant\n%q", i, got[2:], tt.want)
		}
		_, back, err := Parse(append([]byte("c "), tt.want...))
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		if !reflect.DeepEqual(back, normal(tt.d)) {
			t.Fatalf("vector %d: decoded\n%v\nwant\n%v", i, back, tt.d)
		}
	}
}

// Every shape ng messages take goes through Encode and Parse unchanged.
func TestRoundTrip(t *testing.T) {
	for i, d := range samples {
		raw, err := Encode("cookie", d)
		if err != nil {
			t.Fatal(err)
		}
		cookie, back, err := Parse(raw)
		if err != nil || cookie != "cookie" {
			t.Fatalf("sample %d: %q %v", i, cookie, err)
		}
		if !reflect.DeepEqual(back, normal(d)) {
			t.Fatalf("sample %d: decoded\n%v\nwant\n%v", i, back, d)
		}
	}
	// Keys out of order (Kamailio sends them so) are read all the same.
	if _, d, err := Parse([]byte("c d7:command4:ping7:call-id1:xe")); err != nil || d.Str("call-id") != "x" {
		t.Fatalf("keys out of order: %v %v", d, err)
	}
}

// normal is d as Parse returns it: dictionaries as Dict at the top and
// map[string]any inside, lists as []any.
func normal(d Dict) Dict {
	var conv func(v any) any
	conv = func(v any) any {
		switch x := v.(type) {
		case Dict:
			m := map[string]any{}
			for k, e := range x {
				m[k] = conv(e)
			}
			return m
		case map[string]any:
			m := map[string]any{}
			for k, e := range x {
				m[k] = conv(e)
			}
			return m
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[i] = conv(e)
			}
			return out
		}
		return v
	}
	return Dict(conv(map[string]any(d)).(map[string]any))
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
		// ParseReply accepts what Parse accepts and reads the same.
		_, lazy, lerr := ParseReply(b)
		if (err == nil) != (lerr == nil) {
			t.Fatalf("Parse: %v, ParseReply: %v", err, lerr)
		}
		if err != nil {
			return
		}
		if got := decoded(lazy); !reflect.DeepEqual(got, map[string]any(d)) {
			t.Fatalf("lazily %v / %v", got, d)
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

func BenchmarkEncodeOffer(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode("cookie", samples[2]); err != nil {
			b.Fatal(err)
		}
	}
}
