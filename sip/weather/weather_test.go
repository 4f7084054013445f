package weather

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

func TestAccessType(t *testing.T) {
	tests := []struct{ pani, want string }{
		{"3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=45005001a2b3c4d5", "lte"},
		{"3GPP-E-UTRAN-TDD;utran-cell-id-3gpp=4600012345678", "lte"},
		{"3gpp-e-utran-fdd; utran-cell-id-3gpp=45005001", "lte"},
		{"3GPP-E-UTRAN-NB-IoT", "lte"},
		{"3GPP-NR-FDD; utran-cell-id-3gpp=310410000001", "nr"},
		{"3GPP-NR-TDD;utran-cell-id-3gpp=45008000000001", "nr"},
		{"3GPP-NR", "nr"},
		{"3GPP-NR-U-TDD", "nr"},
		{"3GPP-UTRAN-FDD; utran-cell-id-3gpp=4500500010001", "3g"},
		{"3GPP-UTRAN-TDD", "3g"},
		{`3GPP-GERAN; cgi-3gpp="45005123456789"`, "2g"},
		{"IEEE-802.11; i-wlan-node-id=ffeeddccbbaa", "wifi"},
		{"IEEE-802.11ac", "wifi"},
		{"IEEE-802.11n;i-wlan-node-id=001122334455;country=KR", "wifi"},
		{"  IEEE-802.11b  ", "wifi"},
		{"3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=45005, IEEE-802.11", "lte"}, // the first value
		{"ADSL; dsl-location=0001", "unknown"},
		{"3GPP2-1X-HRPD", "unknown"},
		{"3GPP-NRX", "unknown"},
		{"3GPP-UTRAN", "unknown"},
		{"", "unknown"},
		{";", "unknown"},
	}
	for _, tt := range tests {
		if got := AccessType(tt.pani); got != tt.want {
			t.Errorf("AccessType(%q) = %q, want %q", tt.pani, got, tt.want)
		}
	}
}

var hour = time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)

func rec(caller, callee *calls.MediaQuality) calls.Record {
	a := hour.Add(59*time.Minute + 59*time.Second)
	return calls.Record{CallID: "x", Start: hour.Add(59 * time.Minute), Answer: &a, End: hour.Add(2 * time.Hour), CallerMedia: caller, CalleeMedia: callee}
}

func TestObserve(t *testing.T) {
	t.Run("no media", func(t *testing.T) {
		if obs := Observe(rec(nil, nil)); len(obs) != 0 {
			t.Fatalf("%+v", obs)
		}
		if obs := Observe(rec(&calls.MediaQuality{Network: "a"}, nil)); len(obs) != 0 {
			t.Fatalf("a side with no packets and no report: %+v", obs)
		}
	})
	t.Run("hour of the answer, in UTC", func(t *testing.T) {
		r := rec(&calls.MediaQuality{Sent: 10}, nil)
		seoul := time.FixedZone("KST", 9*3600)
		a := hour.Add(30 * time.Minute).In(seoul)
		r.Answer = &a
		if got := Hour(r); !got.Equal(hour) || got.Location() != time.UTC {
			t.Fatalf("hour %v", got)
		}
		r.Answer = nil // unanswered: its start
		r.Start = hour.Add(-time.Minute)
		if got := Hour(r); !got.Equal(hour.Add(-time.Hour)) {
			t.Fatalf("hour %v", got)
		}
	})
	t.Run("cells and tags", func(t *testing.T) {
		caller := &calls.MediaQuality{Network: "carrier-a", Access: "nr", Sent: 1000, Lost: 60, LossPct: 6, JitterMS: 25, MOS: 3.1,
			DownLossPct: 0.5, RTTMS: 80, Tags: map[string]string{"plan": "5g", "device": "ios", "": "x", "a=b": "y"}}
		callee := &calls.MediaQuality{Sent: 500, Lost: -3, JitterMS: 2, MOS: 4.41}
		obs := Observe(rec(caller, callee))
		var got []string
		for _, o := range obs {
			got = append(got, o.Cell.Network+"/"+o.Cell.Access+"/"+o.Cell.Hop+"/"+o.Cell.Tag)
			if !o.Cell.Hour.Equal(hour) {
				t.Fatalf("hour %v", o.Cell.Hour)
			}
		}
		want := "carrier-a/nr/uplink/ carrier-a/nr/uplink/device=ios carrier-a/nr/uplink/plan=5g " +
			"carrier-a/nr/downlink/ carrier-a/nr/downlink/device=ios carrier-a/nr/downlink/plan=5g other/unknown/uplink/"
		if strings.Join(got, " ") != want {
			t.Fatalf("cells\n%s\nwant\n%s", strings.Join(got, " "), want)
		}
		up, down, other := obs[0].Counters, obs[3].Counters, obs[6].Counters
		if up.Calls != 1 || up.Expected != 1000 || up.Lost != 60 || up.Over1 != 1 || up.Over5 != 1 || up.Loss[LossBins.Index(6)] != 1 ||
			up.Jitter[3] != 1 || up.JitterMS != 25 || up.MOSCalls != 1 || up.MOSSum != 310 || up.MOSSumSq != 96100 || up.MOS[20] != 1 {
			t.Fatalf("uplink %+v", up)
		}
		// Downlink: the callee's 500 sent (a negative lost is duplicates,
		// none lost), 0.5 % of them lost by the caller's report.
		if down.Expected != 500 || down.Lost != 3 || down.Over1 != 0 || down.MOSCalls != 0 || down.Loss[3] != 1 {
			t.Fatalf("downlink %+v", down)
		}
		if other.Lost != 0 || other.MOSSum != 441 || other.MOS[34] != 1 {
			t.Fatalf("callee uplink %+v", other)
		}
	})
	t.Run("downlink without the other side", func(t *testing.T) {
		obs := Observe(rec(&calls.MediaQuality{DownJitterMS: 4}, nil))
		if len(obs) != 1 || obs[0].Cell.Hop != Downlink || obs[0].Counters.Calls != 1 || obs[0].Counters.Expected != 0 || obs[0].Counters.Loss[0] != 1 {
			t.Fatalf("%+v", obs)
		}
	})
	t.Run("out of range values are clamped", func(t *testing.T) {
		obs := Observe(rec(&calls.MediaQuality{Sent: 10, Lost: 50, LossPct: 500, JitterMS: -5, MOS: 7}, nil))
		c := obs[0].Counters
		if c.Lost != 10 || c.Loss[NLossBins-1] != 1 || c.Jitter[0] != 1 || c.JitterMS != 0 || c.MOSSum != 450 {
			t.Fatalf("%+v", c)
		}
	})
}

func TestBins(t *testing.T) {
	if len(LossBins.Upper) != NLossBins || len(JitterBins.Upper) != NJitterBins || len(MOSBins.Upper) != NMOSBins {
		t.Fatal("bin counts differ from the arrays")
	}
	if MOSBins.Upper[0] != 1.1 || MOSBins.Upper[NMOSBins-1] != 4.5 || MOSBins.Index(4.3) != 32 || MOSBins.Index(1) != 0 {
		t.Fatalf("MOS bins %v", MOSBins.Upper)
	}
}

func TestCheck(t *testing.T) {
	ok := Query{From: hour, To: hour.Add(time.Hour)}
	for _, by := range [][]string{nil, {"network"}, {"hop", "access", "hour", "network", "tag:plan"}} {
		q := ok
		q.By = by
		if err := q.Check(); err != nil {
			t.Errorf("by %v: %v", by, err)
		}
	}
	for _, m := range Metrics {
		q := ok
		q.Metric = m
		if err := q.Check(); err != nil {
			t.Errorf("metric %s: %v", m, err)
		}
	}
	q := ok
	q.By = []string{"city"}
	var pe *ParamError
	if err := q.Check(); !errors.As(err, &pe) || pe.Param != "by" || !strings.Contains(err.Error(), `"city"`) {
		t.Fatalf("%v", err)
	}
}

func TestHours(t *testing.T) {
	now := hour.Add(30 * time.Minute)
	q := Query{From: hour.Add(-5*time.Hour - 10*time.Minute), To: hour.Add(time.Minute)}
	hours := q.Hours(now, 0)
	if len(hours) != 7 || !hours[0].Equal(hour.Add(-6*time.Hour)) || !hours[6].Equal(hour) {
		t.Fatalf("%v", hours)
	}
	// A 3 h retention at 14:30 keeps the hours ending after 11:30: 11:00 on.
	if hours := q.Hours(now, 3*time.Hour); len(hours) != 4 || !hours[0].Equal(hour.Add(-3*time.Hour)) {
		t.Fatalf("%v", hours)
	}
	if got := OldestRetained(hour, 3*time.Hour); !got.Equal(hour.Add(-3 * time.Hour)) {
		// At 14:00 sharp the 10:00 hour ended 3 h ago: gone.
		t.Fatalf("oldest %v", got)
	}
	// A far To is cut a day after now.
	far := Query{From: hour, To: hour.AddDate(100, 0, 0)}
	if n := len(far.Hours(now, 0)); n != 25 {
		t.Fatalf("%d hours", n)
	}
}

func TestGroupOrderAndFilter(t *testing.T) {
	side := func(network string, tags map[string]string) *calls.MediaQuality {
		return &calls.MediaQuality{Network: network, Sent: 100, Tags: tags}
	}
	var obs []Observation
	for _, r := range []calls.Record{
		rec(side("b", map[string]string{"plan": "x"}), side("a", map[string]string{"plan": "y"})),
		rec(side("a", nil), nil),
	} {
		obs = append(obs, Observe(r)...)
	}
	rows := Group(Query{From: hour, To: hour.Add(time.Hour), By: []string{"network"}}, obs)
	if len(rows) != 2 || rows[0].Dims["network"] != "a" || rows[0].Calls != 2 || rows[1].Dims["network"] != "b" || rows[1].Calls != 1 {
		t.Fatalf("%+v", rows)
	}
	rows = Group(Query{From: hour, To: hour.Add(time.Hour), By: []string{"tag:plan", "network"}}, obs)
	if len(rows) != 2 || rows[0].Dims["tag:plan"] != "x" || rows[0].Dims["network"] != "b" || rows[1].Dims["tag:plan"] != "y" {
		t.Fatalf("%+v", rows)
	}
	if rows := Group(Query{From: hour.Add(time.Hour), To: hour.Add(2 * time.Hour)}, obs); len(rows) != 0 {
		t.Fatalf("outside the range: %+v", rows)
	}
}

func TestReadRecords(t *testing.T) {
	in := `{"call_id":"a","start":"2026-12-01T14:00:00Z","caller_media":{"network":"carrier-a","access":"lte","tags":{"plan":"lte-62"},"sent":100,"lost":2,"loss_pct":2,"jitter_ms":3,"mos":4.1}}

{"call_id":"b","start":"2026-12-01T15:00:00Z"}
`
	var ids []string
	for r, err := range ReadRecords(strings.NewReader(in)) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.CallID)
		if r.CallID == "a" && (r.CallerMedia.Access != "lte" || r.CallerMedia.Tags["plan"] != "lte-62") {
			t.Fatalf("%+v", r.CallerMedia)
		}
	}
	if strings.Join(ids, ",") != "a,b" {
		t.Fatalf("%v", ids)
	}
	var err error
	for _, e := range ReadRecords(strings.NewReader(in + "{broken\n")) {
		err = e
	}
	if err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Fatalf("%v", err)
	}
	for _, e := range ReadRecordsFile("/nonexistent/cdr.jsonl") {
		err = e
	}
	if err == nil {
		t.Fatal("a missing file read")
	}
}

type counting struct{ n int }

func (c *counting) Add(context.Context, calls.Record) error     { c.n++; return nil }
func (c *counting) Query(context.Context, Query) ([]Row, error) { return nil, nil }

func TestSink(t *testing.T) {
	c := &counting{}
	if err := Sink(c).Write(context.Background(), calls.Record{}); err != nil || c.n != 1 {
		t.Fatalf("%v %d", err, c.n)
	}
}
