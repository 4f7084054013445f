package ng

import (
	"reflect"
	"strings"
	"testing"
)

// decoded is v with every Raw in it decoded, as Parse would return it.
func decoded(v any) any {
	switch x := v.(type) {
	case Raw:
		return decoded(x.decode())
	case Dict:
		m := map[string]any{}
		for k, e := range x {
			m[k] = decoded(e)
		}
		return m
	case map[string]any:
		return decoded(Dict(x))
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = decoded(e)
		}
		return out
	}
	return v
}

// ParseReply reads what Parse reads, its lists and dictionaries left Raw,
// and a reply it parsed encodes to the same datagram.
func TestParseReplyIsParseLazily(t *testing.T) {
	for i, d := range samples {
		raw, err := Encode("cookie", d)
		if err != nil {
			t.Fatal(err)
		}
		_, eager, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		cookie, lazy, err := ParseReply(raw)
		if err != nil || cookie != "cookie" {
			t.Fatalf("sample %d: %q %v", i, cookie, err)
		}
		for k, v := range lazy {
			switch v.(type) {
			case []any, map[string]any, Dict:
				t.Fatalf("sample %d: %s decoded (%T)", i, k, v)
			}
		}
		if got := Dict(decoded(lazy).(map[string]any)); !reflect.DeepEqual(got, eager) {
			t.Fatalf("sample %d: lazily\n%v\nwant\n%v", i, got, eager)
		}
		again, err := Encode("cookie", lazy)
		if err != nil || string(again) != string(raw) {
			t.Fatalf("sample %d: re-encoded\n%q\nwant\n%q (%v)", i, again, raw, err)
		}
	}
	for _, raw := range []string{
		"d", "d3:abc", "d3:abci1", "di1ei2ee", "d3:abc99:xe", "d3:abci1x2ee", "d3:abcl", "d1:a-1:xe",
		"d1:ai-e", "d1:aie", "d1:ax", "d1:a3:abcextra", strings.Repeat("d1:a", 40) + "i1e" + strings.Repeat("e", 40),
		"d1:ald1:bi1x2eee", "d1:ali99999999999999999999eee", "d1:ad1:bl3:xyee",
	} {
		if _, _, err := ParseReply([]byte("c " + raw)); err == nil {
			t.Errorf("%q accepted", raw)
		}
	}
}

// Dict's accessors read a Raw list or dictionary as the decoded one.
func TestDictAccessorsTakeRaw(t *testing.T) {
	raw, _ := Encode("c", samples[2])
	_, offer, _ := ParseReply(raw)
	if got := offer.List("flags"); !reflect.DeepEqual(got, []string{"trust-address", "strict-source"}) || !offer.Has("replace", "origin") {
		t.Fatalf("flags %v", got)
	}
	raw, _ = Encode("c", samples[3])
	_, q, _ := ParseReply(raw)
	if q.Dict("tags").Dict("t1").DictAt("medias", 0).DictAt("streams", 0).Dict("stats").Str("bytes") != "1099511627776" {
		t.Fatalf("%v", q)
	}
	if q.Dict("tags").Dict("t1").DictAt("medias", 1) != nil || q.Dict("tags").Dict("t1").DictAt("tag", 0) != nil || q.Dict("result") != nil {
		t.Fatal("DictAt past the end, or of no list")
	}
	eager := samples[3]
	if eager.Dict("tags").Dict("t1").DictAt("medias", 0).Str("index") != "1" {
		t.Fatal("DictAt on a decoded list")
	}
	if q.Raw("tags") == "" || eager.Raw("tags") != q.Raw("tags") || q.Raw("created") != "i1795548000e" || q.Raw("none") != "" {
		t.Fatalf("Raw %q / %q", q.Raw("tags"), eager.Raw("tags"))
	}
}

func TestRawAndReader(t *testing.T) {
	r := Raw("d1:ai-7e1:bl2:xyi3ed1:c1:zee1:d3:123e")
	if v, ok := r.Get("a").Int(); !ok || v != -7 || r.Get("a").Str() != "-7" {
		t.Fatal("a")
	}
	if r.Get("b").At(0).Str() != "xy" || r.Get("b").At(2).Get("c").Str() != "z" || r.Get("b").At(3) != "" || r.Get("b").At(-1) != "" {
		t.Fatal("b")
	}
	if v, ok := r.Get("d").Int(); !ok || v != 123 || r.Get("e") != "" || r.Get("b").Get("x") != "" {
		t.Fatal("d")
	}
	var keys []string
	for k := range r.All() {
		keys = append(keys, k)
	}
	if strings.Join(keys, "") != "abd" {
		t.Fatal(keys)
	}
	var got []string
	rd := r.Reader()
	isDict := rd.Dict(func(k string) {
		switch k {
		case "b":
			rd.List(func(i int) {
				if i == 2 {
					rd.Dict(func(k string) { got = append(got, k+"="+rd.Str()) })
				}
			})
		case "d":
			n, _ := rd.Int()
			got = append(got, "d", strings.Repeat("x", int(n%10)))
		}
	})
	if !isDict || strings.Join(got, ",") != "c=z,d,xxx" || len(rd.b) != 0 {
		t.Fatalf("%v %q", got, rd.b)
	}
	rd = Raw("i5e").Reader()
	if rd.Dict(func(string) { t.Fatal("not a dict") }) || rd.List(func(int) { t.Fatal("not a list") }) || len(rd.b) != 0 {
		t.Fatal("an integer read as a dictionary")
	}
	// Made-up Raw values, malformed, read as absent and never past their end.
	for _, bad := range []Raw{"d1:a", "d1:ai5", "l5:ab", "x", "d", "l", "d99999999999999:ae", "de"} {
		if bad.Get("a") != "" || bad.At(0) != "" {
			t.Fatalf("%q", bad)
		}
		rd := bad.Reader()
		rd.Dict(func(string) { rd.Skip() })
	}
}
