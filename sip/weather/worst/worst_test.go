package worst

import (
	"fmt"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather/weathertest"
)

func TestWorst(t *testing.T) {
	now := time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)
	clock := weathertest.NewClock(now)
	l := New(3, time.Hour, clock.Now)
	add := func(id string, end time.Time, up, down float64) {
		side := weathertest.Side("carrier-a", "lte", 1000, int64(up*10), 5, 4.0, nil)
		side.DownLossPct = down
		r := weathertest.Record(id, end.Add(-time.Minute), side, nil)
		r.End = end
		l.Add(r)
	}
	add("clean", now, 0, 0) // no loss: never listed
	add("a", now, 1, 0)
	add("b", now, 3, 0)
	add("c", now, 0, 7) // downlink
	add("d", now, 2, 0)
	add("old", now.Add(-2*time.Hour), 50, 0) // outside the window
	got := l.Worst()
	var ids []string
	for _, c := range got {
		ids = append(ids, fmt.Sprint(c.CallID, ":", c.Hop, ":", c.LossPct))
	}
	if fmt.Sprint(ids) != "[c:downlink:7 b:uplink:3 d:uplink:2]" {
		t.Fatalf("%v", ids)
	}
	if got[0].Record != "/api/calls/c" || got[0].Side != "caller" || got[0].MOS != 0 || got[1].MOS != 4 {
		t.Fatalf("%+v", got)
	}
	clock.Set(now.Add(61 * time.Minute))
	if got := l.Worst(); len(got) != 0 {
		t.Fatalf("after the window: %+v", got)
	}
	// A Call-ID is escaped in the link.
	l.Add(calls.Record{CallID: "a/b c@h", End: clock.Now(), CalleeMedia: &calls.MediaQuality{Sent: 10, Lost: 1, LossPct: 10}})
	if got := l.Worst(); len(got) != 1 || got[0].Record != "/api/calls/a%2Fb%20c@h" || got[0].Side != "callee" || got[0].Network != "other" {
		t.Fatalf("%+v", got)
	}
}
