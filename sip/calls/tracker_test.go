package calls

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// memorySink keeps the records written to it.
type memorySink struct {
	mu   sync.Mutex
	recs []Record
}

func (m *memorySink) Write(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

func (m *memorySink) records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.recs...)
}

type clock struct{ now time.Time }

func (c *clock) advance(d time.Duration) { c.now = c.now.Add(d) }

func newTracker(t *testing.T) (*Tracker, *memorySink, *clock, *prometheus.Registry) {
	t.Helper()
	sink := &memorySink{}
	reg := prometheus.NewRegistry()
	tr := NewTracker(time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)), reg, sink)
	t.Cleanup(tr.Close)
	c := &clock{now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	tr.now = func() time.Time { return c.now }
	return tr, sink, c, reg
}

// value reads a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.Gauge != nil {
		return out.Gauge.GetValue()
	}
	return out.Counter.GetValue()
}

// series counts the series of a metric family in reg.
func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

func TestAnsweredCallRecord(t *testing.T) {
	for _, tt := range []struct{ byeFrom, hangupBy string }{{"caller-tag", "caller"}, {"callee-tag", "callee"}} {
		t.Run(tt.hangupBy, func(t *testing.T) {
			tr, sink, c, reg := newTracker(t)
			call := tr.Begin(Record{CallID: "c1", From: "sip:alice@sori.test", Caller: "alice"}, "caller-tag")
			if r, a := tr.Active(); r != 1 || a != 0 || value(t, tr.active.WithLabelValues("ringing")) != 1 {
				t.Fatalf("active %d ringing %d answered", r, a)
			}
			c.advance(3 * time.Second)
			call.SetBranches(2)
			call.Answer(200, "OK", "udp:127.0.0.1:5062")
			call.Answer(200, "OK", "udp:127.0.0.1:5063") // a second 2xx changes nothing
			if r, a := tr.Active(); r != 0 || a != 1 {
				t.Fatalf("active %d ringing %d answered", r, a)
			}
			c.advance(90 * time.Second)
			tr.Bye("c1", tt.byeFrom)
			tr.Bye("c1", tt.byeFrom) // retransmitted BYE: one record
			recs := sink.records()
			if len(recs) != 1 {
				t.Fatalf("%d records", len(recs))
			}
			r := recs[0]
			if r.Code != 200 || r.Disposition != Answered || r.HangupBy != tt.hangupBy || r.Duration != 90 || r.Callee != "udp:127.0.0.1:5062" ||
				r.Branches != 2 || r.Answer == nil || r.Answer.Sub(r.Start) != 3*time.Second || r.End.Sub(r.Start) != 93*time.Second {
				t.Fatalf("record %+v", r)
			}
			if got := value(t, tr.ended.WithLabelValues(Answered)); got != 1 {
				t.Fatalf("sori_calls_total{answered} %v", got)
			}
			if n := series(t, reg, "sori_calls_active"); n != 2 {
				t.Fatalf("%d active series", n)
			}
			if r, a := tr.Active(); r != 0 || a != 0 || value(t, tr.active.WithLabelValues("answered")) != 0 {
				t.Fatal("call still active")
			}
		})
	}
}

func TestFailedCallDispositions(t *testing.T) {
	tests := []struct {
		code                int
		cancelled, timedOut bool
		want, hangupBy      string
	}{
		{486, false, false, Busy, ""},
		{600, false, false, Busy, ""},
		{404, false, false, NotFound, ""},
		{604, false, false, NotFound, ""},
		{480, false, false, Unavailable, ""},
		{480, false, true, NoAnswer, ""},
		{408, false, false, NoAnswer, ""},
		{487, true, false, Cancelled, "caller"},
		{403, false, false, Rejected, ""},
		{603, false, false, Rejected, ""},
		{500, false, false, Failed, ""},
		{503, false, false, Failed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			tr, sink, _, _ := newTracker(t)
			call := tr.Begin(Record{CallID: "c1"}, "a")
			call.Fail(tt.code, "x", tt.cancelled, tt.timedOut, 1)
			call.Fail(500, "late", false, false, 1) // only the first end counts
			call.Answer(200, "OK", "late")          // a 2xx after the end is no answer
			tr.Bye("c1", "a")
			recs := sink.records()
			if len(recs) != 1 || recs[0].Code != tt.code || recs[0].Disposition != tt.want || recs[0].HangupBy != tt.hangupBy || recs[0].Answer != nil || recs[0].Duration != 0 {
				t.Fatalf("records %+v", recs)
			}
			if r, a := tr.Active(); r+a != 0 {
				t.Fatal("call still active")
			}
		})
	}
}

func TestSpiralIsTrackedByItsFirstPass(t *testing.T) {
	tr, sink, _, _ := newTracker(t)
	first := tr.Begin(Record{CallID: "c1", RequestURI: "sip:bob@sori.test"}, "a")
	second := tr.Begin(Record{CallID: "c1", RequestURI: "sip:bob@127.0.0.1:5062"}, "a")
	second.Answer(200, "OK", "phone")
	first.Answer(200, "OK", "phone")
	tr.Bye("c1", "a")
	recs := sink.records()
	if len(recs) != 1 || recs[0].RequestURI != "sip:bob@sori.test" {
		t.Fatalf("records %+v", recs)
	}
}

func TestDialogTimeoutExpiresForgottenCalls(t *testing.T) {
	tr, sink, c, _ := newTracker(t)
	old := tr.Begin(Record{CallID: "old"}, "a")
	old.Answer(200, "OK", "x")
	c.advance(50 * time.Minute)
	fresh := tr.Begin(Record{CallID: "fresh"}, "a")
	fresh.Answer(200, "OK", "x")
	ringing := tr.Begin(Record{CallID: "ringing"}, "a")
	c.advance(11 * time.Minute)
	tr.expire()
	recs := sink.records()
	if len(recs) != 1 || recs[0].CallID != "old" || recs[0].Disposition != Expired || recs[0].HangupBy != "timeout" {
		t.Fatalf("records %+v", recs)
	}
	if r, a := tr.Active(); r != 1 || a != 1 {
		t.Fatalf("active %d ringing %d answered", r, a)
	}
	ringing.Fail(487, "Request Terminated", true, false, 1)
}

func TestMediaQualityGoesIntoTheRecord(t *testing.T) {
	tr, sink, _, _ := newTracker(t)
	call := tr.Begin(Record{CallID: "m1"}, "caller-tag")
	tr.Media("m1", map[string]MediaQuality{"x": {Sent: 1}}) // ringing: nothing to say yet, but kept
	call.Answer(200, "OK", "phone")
	tr.Media("m1", map[string]MediaQuality{
		"caller-tag": {Sent: 1000, Lost: 50, LossPct: 5, MOS: 3.9, Network: "carrier-a"},
		"callee-tag": {Sent: 1000, MOS: 4.4},
	})
	tr.Bye("m1", "caller-tag")
	r := sink.records()[0]
	if r.CallerMedia == nil || r.CallerMedia.Lost != 50 || r.CalleeMedia == nil || r.CalleeMedia.MOS != 4.4 || r.MOS != 3.9 {
		t.Fatalf("record %+v", r)
	}
	var m dto.Metric
	if err := tr.loss.WithLabelValues("carrier-a").(prometheus.Histogram).Write(&m); err != nil || m.Histogram.GetSampleCount() != 1 || m.Histogram.GetSampleSum() != 0.05 {
		t.Fatalf("loss histogram for carrier-a: %v %v", m.Histogram, err)
	}
	if err := tr.mos.WithLabelValues("other").(prometheus.Histogram).Write(&m); err != nil || m.Histogram.GetSampleCount() != 1 || m.Histogram.GetSampleSum() != 4.4 {
		t.Fatalf("MOS histogram for the unnamed network: %v %v", m.Histogram, err)
	}
	// Unknown calls and empty reports change nothing.
	tr.Media("nope", map[string]MediaQuality{"a": {}})
	tr.Media("m1", nil)
}
