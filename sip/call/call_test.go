package call

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/timers"
)

// fakes records what the table asked of everything it drives.
type fakes struct {
	mu       sync.Mutex
	records  []calls.Record
	deletes  []string // Call-IDs
	slots    map[string]int
	tolls    map[string]bool
	byes     []string // "callID to-tag"
	quality  map[string]calls.MediaQuality
	networks int
}

func (f *fakes) Write(r calls.Record) { f.mu.Lock(); f.records = append(f.records, r); f.mu.Unlock() }
func (f *fakes) Delete(_ context.Context, _ netip.AddrPort, callID string) map[string]calls.MediaQuality {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, callID)
	out := map[string]calls.MediaQuality{}
	for k, v := range f.quality {
		out[k] = v
	}
	return out
}
func (f *fakes) Acquire(trunk string) { f.mu.Lock(); f.slots[trunk]++; f.mu.Unlock() }
func (f *fakes) Release(trunk string) { f.mu.Lock(); f.slots[trunk]--; f.mu.Unlock() }
func (f *fakes) Begin(_ context.Context, _, callID string) error {
	f.mu.Lock()
	f.tolls[callID] = true
	f.mu.Unlock()
	return nil
}
func (f *fakes) End(callID string) { f.mu.Lock(); delete(f.tolls, callID); f.mu.Unlock() }
func (f *fakes) Resume(_, callID string) {
	f.mu.Lock()
	f.tolls[callID] = true
	f.mu.Unlock()
}
func (f *fakes) Bye(_ context.Context, callID string, to, _ Side) error {
	f.mu.Lock()
	f.byes = append(f.byes, callID+" "+to.Tag)
	f.mu.Unlock()
	return nil
}
func (f *fakes) Classify(netip.Addr, string) string {
	f.mu.Lock()
	f.networks++
	f.mu.Unlock()
	return "lte-net"
}

func newTable(t *testing.T, dialogTimeout time.Duration) (*Table, *fakes, *timers.Set) {
	t.Helper()
	f := &fakes{slots: map[string]int{}, tolls: map[string]bool{},
		quality: map[string]calls.MediaQuality{"caller-tag": {Sent: 100, Lost: 2, LossPct: 2, MOS: 4.1}, "callee-tag": {Sent: 100, MOS: 4.4}}}
	ts := &timers.Set{}
	tb := New(Config{Records: f, Media: f, Slots: f, Tolls: f, Networks: f, Hangup: f, DialogTimeout: dialogTimeout, Timers: ts,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return tb, f, ts
}

var anchorAddr = netip.MustParseAddrPort("127.0.0.1:22222")

func answer(c *Call) {
	c.Answered(Answer{Code: 200, Reason: "OK", Contact: "sip:bob@127.0.0.1:5062", Trunk: "carrier",
		Caller: Side{Target: "sip:alice@127.0.0.1:5061", Tag: "caller-tag", ID: "sip:alice@sori.test", CSeq: 1},
		Callee: Side{Target: "sip:bob@127.0.0.1:5062", Tag: "callee-tag", ID: "sip:bob@sori.test"}, Dialog: true})
}

// Every way a call ends leaves nothing behind: the record written once,
// the media deleted once when it was still up, the trunk slot and the toll
// count given back, no timer pending, the table empty, no goroutine left.
func TestEveryEndingLeavesNothing(t *testing.T) {
	tests := []struct {
		name        string
		end         func(tb *Table, c *Call)
		disposition string
		hangupBy    string
		deletes     int // media deletes sent
		byes        int // BYEs sori sent
		answered    bool
	}{
		{"answered, caller hangs up", func(_ *Table, c *Call) { answer(c); c.Bye("caller-tag"); c.Bye("caller-tag") }, calls.Answered, "caller", 1, 0, true},
		{"answered, callee hangs up", func(_ *Table, c *Call) { answer(c); c.Bye("callee-tag") }, calls.Answered, "callee", 1, 0, true},
		{"cancelled", func(_ *Table, c *Call) { c.Cancelled(2); c.Failed(487, "Request Terminated", false, 2) }, calls.Cancelled, "caller", 1, 0, false},
		{"rejected", func(_ *Table, c *Call) { c.Failed(486, "Busy Here", false, 1) }, calls.Busy, "", 1, 0, false},
		{"timer C", func(_ *Table, c *Call) { c.Failed(480, "No Answer", true, 1) }, calls.NoAnswer, "", 1, 0, false},
		{"media timeout", func(tb *Table, c *Call) {
			answer(c)
			tb.MediaTimeout(netip.MustParseAddrPort("127.0.0.1:1"), c.ID(), nil) // not its anchor: ignored
			tb.MediaTimeout(anchorAddr, c.ID(), map[string]calls.MediaQuality{"caller-tag": {Sent: 10, MOS: 3}})
		}, calls.MediaTimeout, "media-timeout", 0, 2, true},
		{"dialog timeout", func(_ *Table, c *Call) { answer(c) }, calls.Expired, "timeout", 1, 2, true},
		{"ACK without the answer to the 2xx's offer", func(_ *Table, c *Call) { answer(c); c.NoSDPAnswer(); c.NoSDPAnswer() },
			calls.NoSDPAnswer, "no-sdp-answer", 1, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			tb, f, ts := newTable(t, 300*time.Millisecond)
			c := tb.Begin(calls.Record{CallID: "c1", Caller: "alice"}, "caller-tag")
			if err := c.CountToll(context.Background(), "alice"); err != nil {
				t.Fatal(err)
			}
			c.Anchored(anchorAddr)
			if tb.Find("c1") != c || ts.Pending() != 1 {
				t.Fatalf("not held: find %v, %d timers", tb.Find("c1"), ts.Pending())
			}
			tt.end(tb, c)
			if tt.answered && tt.disposition != calls.Expired {
				// An answered call ended by BYE or media timeout holds
				// no timer for its dialog timeout.
				if n := ts.Pending(); n != 0 {
					t.Fatalf("%d timers pending after the end", n)
				}
			}
			deadline := time.Now().Add(3 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = tb.Wait(ctx)
				cancel()
				f.mu.Lock()
				n := len(f.records)
				f.mu.Unlock()
				if n > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.records) != 1 {
				t.Fatalf("%d records", len(f.records))
			}
			r := f.records[0]
			if r.Disposition != tt.disposition || r.HangupBy != tt.hangupBy {
				t.Fatalf("record %s by %q, want %s by %q", r.Disposition, r.HangupBy, tt.disposition, tt.hangupBy)
			}
			if len(f.deletes) != tt.deletes || len(f.byes) != tt.byes {
				t.Fatalf("%d deletes, %d BYEs; want %d, %d", len(f.deletes), len(f.byes), tt.deletes, tt.byes)
			}
			if tt.answered && (r.CallerMedia == nil || r.CallerMedia.Network != "lte-net") {
				t.Fatalf("media quality not in the record: %+v", r.CallerMedia)
			}
			for trunk, n := range f.slots {
				if n != 0 {
					t.Fatalf("trunk %s holds %d slots", trunk, n)
				}
			}
			if len(f.tolls) != 0 {
				t.Fatalf("toll counts %v", f.tolls)
			}
			if tb.Len() != 0 || tb.Held() != 0 || ts.Pending() != 0 {
				t.Fatalf("table %d, held %d, timers %d", tb.Len(), tb.Held(), ts.Pending())
			}
			for i := 0; runtime.NumGoroutine() > before && i < 100; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > before {
				t.Fatalf("%d goroutines, %d before", n, before)
			}
		})
	}
}

func TestAnsweredRecordAndSlot(t *testing.T) {
	tb, f, _ := newTable(t, time.Hour)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tb.now = func() time.Time { return now }
	c := tb.Begin(calls.Record{CallID: "c1", Caller: "alice"}, "caller-tag")
	now = now.Add(3 * time.Second)
	c.SetBranches(2)
	c.Anchored(anchorAddr)
	c.SetRoute("+821012345678", "+821099990000", "", "udp:127.0.0.1:5070")
	answer(c)
	answer(c) // a second 2xx changes nothing
	f.mu.Lock()
	if f.slots["carrier"] != 1 {
		t.Fatalf("slots %v", f.slots)
	}
	f.mu.Unlock()
	c.Seen("callee-tag", 12)
	c.Seen("caller-tag", 5)
	if st := c.State(); st.Callee.CSeq != 12 || st.Caller.CSeq != 5 || st.Phase != Answered || st.Trunk != "carrier" {
		t.Fatalf("state %+v", st)
	}
	now = now.Add(90 * time.Second)
	c.Bye("callee-tag")
	if err := tb.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := f.records[0]
	if r.Code != 200 || r.Duration != 90 || r.Callee != "sip:bob@127.0.0.1:5062" || r.Branches != 2 || r.Number != "+821012345678" ||
		r.Answer == nil || r.Answer.Sub(r.Start) != 3*time.Second || r.MOS != 4.1 || r.HangupBy != "callee" {
		t.Fatalf("record %+v", r)
	}
}

// The state is a plain value: it goes to JSON and back unchanged.
func TestStateSavesAndLoads(t *testing.T) {
	tb, _, _ := newTable(t, time.Hour)
	c := tb.Begin(calls.Record{CallID: "c1", Caller: "alice"}, "caller-tag")
	c.Anchored(anchorAddr)
	answer(c)
	st := c.State()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	st.Record.Start, back.Record.Start = time.Time{}, time.Time{}
	st.Record.Answer, back.Record.Answer = nil, nil
	st.Expiry, back.Expiry = time.Time{}, time.Time{}
	if !reflect.DeepEqual(st, back) {
		t.Fatalf("saved %+v\nloaded %+v", st, back)
	}
	c.Bye("caller-tag")
}

// A saved call loaded into another table (a restart) is that call: it
// holds its slot there, a BYE ends it with one record and gives it back.
func TestLoadedCallEndsThere(t *testing.T) {
	tb, _, _ := newTable(t, time.Hour)
	c := tb.Begin(calls.Record{CallID: "c1", Caller: "alice"}, "caller-tag")
	c.Anchored(anchorAddr)
	answer(c)
	saved, _ := json.Marshal(c.State())

	other, f, ts := newTable(t, time.Hour)
	var st State
	if err := json.Unmarshal(saved, &st); err != nil {
		t.Fatal(err)
	}
	loaded := other.Load(context.Background(), st)
	if loaded == nil || other.Find("c1") != loaded || ts.Pending() != 1 || f.slots["carrier"] != 1 {
		t.Fatalf("not loaded: %v, %d timers, slots %v", loaded, ts.Pending(), f.slots)
	}
	if other.Load(context.Background(), st) != nil {
		t.Fatal("loaded twice")
	}
	if a, ok := loaded.Anchor(); !ok || a != anchorAddr {
		t.Fatalf("anchor %v %v", a, ok)
	}
	loaded.Bye("callee-tag")
	if err := other.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.records) != 1 || f.records[0].HangupBy != "callee" || len(f.deletes) != 1 || f.slots["carrier"] != 0 || other.Len() != 0 || ts.Pending() != 0 {
		t.Fatalf("records %+v, deletes %v, slots %v", f.records, f.deletes, f.slots)
	}
}

func TestSpiralIsHeldByItsFirstPass(t *testing.T) {
	tb, f, ts := newTable(t, time.Hour)
	first := tb.Begin(calls.Record{CallID: "s"}, "a")
	second := tb.Begin(calls.Record{CallID: "s"}, "a")
	if tb.Find("s") != first || tb.Len() != 1 {
		t.Fatal("the first pass is not the one held")
	}
	second.Failed(404, "Not Found", false, 1)
	if tb.Find("s") != first {
		t.Fatal("the later pass's end removed the first")
	}
	first.Failed(404, "Not Found", false, 1)
	if len(f.records) != 2 || tb.Len() != 0 || ts.Pending() != 0 {
		t.Fatalf("%d records, %d held, %d timers", len(f.records), tb.Len(), ts.Pending())
	}
}

func TestFailedDispositions(t *testing.T) {
	for _, tt := range []struct {
		code     int
		timedOut bool
		want     string
	}{{486, false, calls.Busy}, {600, false, calls.Busy}, {404, false, calls.NotFound}, {480, false, calls.Unavailable},
		{408, false, calls.NoAnswer}, {480, true, calls.NoAnswer}, {503, false, calls.Failed}, {403, false, calls.Rejected}} {
		tb, f, _ := newTable(t, time.Hour)
		tb.Begin(calls.Record{CallID: "x"}, "a").Failed(tt.code, "r", tt.timedOut, 1)
		if got := f.records[0].Disposition; got != tt.want || f.records[0].Code != tt.code {
			t.Fatalf("%d timedOut=%v: %s", tt.code, tt.timedOut, got)
		}
	}
}
