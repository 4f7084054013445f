package anchoring

import (
	"testing"

	"github.com/sori-voice/sori/media/ng"
)

// deleteReply is a delete reply as sori-anchor sends it for a two-leg
// call with RTCP reports (media/anchor/query.go's stats): what sori's ng
// client decodes and Quality reads at the end of every anchored call.
func deleteReply() ng.Dict {
	stream := func(port int64, addr string, rtp bool) map[string]any {
		st := map[string]any{"local port": port, "last packet": int64(1796400000),
			"stats":    map[string]any{"packets": int64(1500), "bytes": int64(258000), "errors": int64(0)},
			"endpoint": map[string]any{"family": "IPv4", "address": addr, "port": port + 10000}}
		if rtp {
			st["SSRC"] = int64(0x1234abcd)
			st["reception"] = map[string]any{"expected": int64(1500), "received": int64(1497), "lost": int64(3),
				"fraction lost": int64(0), "jitter": int64(2), "duplicates": int64(0), "reordered": int64(1), "MOS": int64(43)}
			st["downstream"] = map[string]any{"fraction lost": int64(1), "lost": int64(4), "jitter": int64(3), "RTT": int64(22),
				"hop lost": int64(1), "hop expected": int64(1500)}
			st["jitter buffer"] = map[string]any{"delay": int64(40), "max delay": int64(60), "played": int64(1490),
				"late": int64(2), "duplicates": int64(0), "reordered": int64(1), "resyncs": int64(0)}
		}
		return st
	}
	leg := func(tag, peer string, port int64, addr string) map[string]any {
		return map[string]any{"tag": tag, "created": int64(1796399970), "in dialogue with": peer, "medias": []any{
			map[string]any{"index": int64(1), "type": "audio", "protocol": "RTP/AVP",
				"streams": []any{stream(port, addr, true), stream(port+1, addr, false)}},
		}}
	}
	counters := map[string]any{"packets": int64(6000), "bytes": int64(1032000), "errors": int64(0)}
	return ng.Dict{"result": "ok", "created": int64(1796399970), "created_us": int64(1796399970123456), "last signal": int64(1796399999),
		"tags": map[string]any{
			"as7d8f9g0h": leg("as7d8f9g0h", "kq2w3e4r5t", 30000, "198.51.100.7"),
			"kq2w3e4r5t": leg("kq2w3e4r5t", "as7d8f9g0h", 30002, "203.0.113.9"),
		},
		"totals": map[string]any{"RTP": counters, "RTCP": counters}}
}

// BenchmarkDeleteReplyQuality is sori's end of a delete: the reply's
// datagram decoded as its ng client decodes it, then read by Quality.
func BenchmarkDeleteReplyQuality(b *testing.B) {
	raw, err := ng.Encode("5f3a9c1e2b7d_1a", deleteReply())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, d, err := ng.ParseReply(raw)
		if err != nil {
			b.Fatal(err)
		}
		if q := Quality(d); q["as7d8f9g0h"].Sent != 1500 {
			b.Fatal(q)
		}
	}
}
