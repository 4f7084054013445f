package anchor

import (
	"net/netip"
	"slices"
	"time"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/quality"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/rtpstats"
)

// query reports a call: per tag, per media section, per stream, with
// rtpengine's keys ("tags", "medias", "streams", "stats", "totals").
func (m *Manager) query(req ng.Dict) ng.Dict {
	if res := required(req, "call-id"); res != nil {
		return res
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.calls[req.Str("call-id")]
	if c == nil {
		return ng.Error("Unknown call-id")
	}
	return ok(c.stats(time.Now()))
}

// list returns the Call-IDs held, up to "limit" (default 32, as rtpengine).
func (m *Manager) list(req ng.Dict) ng.Dict {
	limit, ok := req.Int("limit")
	if !ok || limit <= 0 {
		limit = 32
	}
	m.mu.Lock()
	ids := make([]string, 0, len(m.calls))
	for id := range m.calls {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	slices.Sort(ids)
	if int64(len(ids)) > limit {
		ids = ids[:limit]
	}
	calls := make([]any, len(ids))
	for i, id := range ids {
		calls[i] = id
	}
	return ng.OK(ng.Dict{"calls": calls})
}

// ok makes d, a reply of its own, a successful one: ng.OK without the
// copy of every key it makes.
func ok(d ng.Dict) ng.Dict {
	d["result"] = "ok"
	return d
}

func (c *call) stats(now time.Time) ng.Dict {
	var totRTP, totRTCP relay.Counters
	tags := ng.Dict{}
	for _, l := range c.legs {
		var medias []any // nil for none, as before
		if len(l.medias) > 0 {
			medias = make([]any, 0, len(l.medias))
		}
		for i, md := range l.medias {
			rtp, rtcp := md.stream.Stats()
			totRTP = add(totRTP, rtp)
			totRTCP = add(totRTCP, rtcp)
			ep, _ := md.stream.Endpoint()
			last := md.stream.LastPacket()
			addr := "" // the RTP and RTCP endpoints' address, formatted once
			if ep.IsValid() {
				addr = ep.Addr().String()
			}
			rtpDict := streamDict(md.stream.Port(), ep, addr, last, rtp)
			if rep := md.stream.ReceptionSnapshot(); rep.Expected > 0 {
				rtpDict["SSRC"] = int64(rep.SSRC)
				rtpDict["reception"] = receptionDict(rep)
			}
			if st, ok := md.stream.JitterStats(); ok {
				jb := ng.Dict{
					"delay": st.Delay.Milliseconds(), "max delay": st.MaxDelay.Milliseconds(), "played": int64(st.Played),
					"late": int64(st.Late), "duplicates": int64(st.Duplicates), "reordered": int64(st.Reordered), "resyncs": int64(st.Resyncs),
					"advanced": int64(st.Advanced), "grown": int64(st.Grown), "shrunk": int64(st.Shrunk),
				}
				if st.Queued > 0 {
					// What a packet was held for by design, on average: the delay moves
					// within a call (grown, shrunk), so "delay" alone is only the last.
					jb["mean delay us"] = (st.DelaySum / time.Duration(st.Queued)).Microseconds()
					// The sum and count too, so that a client can take the mean over
					// an interval of its own from two queries.
					jb["queued"], jb["delay sum us"] = int64(st.Queued), st.DelaySum.Microseconds()
				}
				rtpDict["jitter buffer"] = jb
			}
			if down := md.stream.Downstream(); down.Known {
				// The phone's own report on what reaches it through the
				// anchor: end to end from the other phone. Less what the
				// anchor saw lost on the way in, it is the hop anchor → phone.
				dd := ng.Dict{
					"fraction lost": int64(down.Report.FractionLost), "lost": int64(down.Report.TotalLost),
					"jitter": int64(down.Report.Jitter) * 1000 / 48000, "RTT": down.RTT.Milliseconds(),
				}
				if l.peer != nil && i < len(l.peer.medias) {
					if up := l.peer.medias[i].stream.ReceptionSnapshot(); up.Expected > 0 {
						dd["hop lost"] = max(int64(down.Report.TotalLost)-int64(max(up.Lost, 0)), 0)
						dd["hop expected"] = int64(up.Expected)
					}
				}
				rtpDict["downstream"] = dd
			}
			streams := []any{
				rtpDict,
				streamDict(md.stream.Port()+1, netip.AddrPortFrom(ep.Addr(), ep.Port()+1), addr, last, rtcp),
			}
			mdict := ng.Dict{"index": md.index, "type": md.typ, "protocol": md.proto, "streams": streams}
			if cd := md.cryptoDict(); cd != nil {
				// Relayed packets dropped before the leg had keys (early
				// media before a browser's DTLS handshake ended).
				cd["unkeyed drops"] = int64(md.stream.Unkeyed())
				mdict["SRTP"] = cd
			}
			medias = append(medias, mdict)
		}
		d := ng.Dict{"tag": l.tag, "created": l.created.Unix(), "medias": medias}
		if l.label != "" {
			d["label"] = l.label
		}
		if l.peer != nil {
			d["in dialogue with"] = l.peer.tag
		}
		tags[l.tag] = d
	}
	return ng.Dict{
		"created":     c.created.Unix(),
		"created_us":  c.created.UnixMicro(),
		"last signal": c.lastSignal.Unix(),
		"tags":        tags,
		"totals":      ng.Dict{"RTP": counters(totRTP), "RTCP": counters(totRTCP)},
	}
}

func streamDict(port int, ep netip.AddrPort, addr string, last time.Time, c relay.Counters) ng.Dict {
	d := ng.Dict{"local port": port, "stats": counters(c)}
	if ep.IsValid() {
		fam := "IPv4"
		if ep.Addr().Is6() {
			fam = "IPv6"
		}
		d["endpoint"] = ng.Dict{"family": fam, "address": addr, "port": int(ep.Port())}
	}
	if !last.IsZero() {
		d["last packet"] = last.Unix()
	}
	return d
}

// receptionDict is the hop phone → anchor: RFC 3550 loss and jitter, and
// the E-model MOS of that hop alone (×10, as rtpengine reports MOS).
func receptionDict(r rtpstats.Report) ng.Dict {
	leg := quality.Leg{Expected: uint64(r.Expected), Lost: uint64(max(r.Lost, 0)), Bursts: r.Bursts}
	return ng.Dict{
		"expected": int64(r.Expected), "received": int64(r.Received), "lost": int64(r.Lost),
		"fraction lost": int64(r.FractionLost), "jitter": r.JitterDuration.Milliseconds(),
		"duplicates": int64(r.Duplicates), "reordered": int64(r.Reordered), "MOS": int64(leg.MOS()*10 + 0.5),
	}
}

func counters(c relay.Counters) ng.Dict {
	return ng.Dict{"packets": int64(c.Packets), "bytes": int64(c.Bytes), "errors": int64(c.Errors)}
}

func add(a, b relay.Counters) relay.Counters {
	return relay.Counters{Packets: a.Packets + b.Packets, Bytes: a.Bytes + b.Bytes, Errors: a.Errors + b.Errors}
}
