package overload

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func request(t *testing.T, method, toTag string) *sip.Request {
	t.Helper()
	to := "<sip:bob@sori.test>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	raw := method + " sip:bob@sori.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n" +
		"From: <sip:alice@sori.test>;tag=a\r\nTo: " + to + "\r\nCall-ID: c1\r\nCSeq: 1 " + method + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return m.(*sip.Request)
}

func TestShed(t *testing.T) {
	now := time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		limit   time.Duration
		method  string
		toTag   string
		waited  time.Duration
		stamped bool
		want    bool
	}{
		{"a new INVITE that waited too long", 400 * time.Millisecond, "INVITE", "", 401 * time.Millisecond, true, true},
		{"a REGISTER that waited too long", 400 * time.Millisecond, "REGISTER", "", 2 * time.Second, true, true},
		{"a MESSAGE outside a dialog", 400 * time.Millisecond, "MESSAGE", "", time.Second, true, true},
		{"in time", 400 * time.Millisecond, "INVITE", "", 400 * time.Millisecond, true, false},
		{"a BYE ends a call: never shed", 400 * time.Millisecond, "BYE", "b", time.Second, true, false},
		{"a re-INVITE is inside a dialog", 400 * time.Millisecond, "INVITE", "b", time.Second, true, false},
		{"ACK", 400 * time.Millisecond, "ACK", "", time.Second, true, false},
		{"CANCEL", 400 * time.Millisecond, "CANCEL", "", time.Second, true, false},
		{"not stamped (a stream)", 400 * time.Millisecond, "INVITE", "", time.Second, false, false},
		{"shedding off", 0, "INVITE", "", time.Hour, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s := New(tc.limit, reg, nil)
			var arrived time.Time
			if tc.stamped {
				arrived = now.Add(-tc.waited)
			}
			if got := s.Shed(request(t, tc.method, tc.toTag), arrived, now); got != tc.want {
				t.Fatalf("Shed = %v, want %v", got, tc.want)
			}
			want := 0.0
			if tc.want {
				want = 1
			}
			if got := testutil.ToFloat64(s.shed.WithLabelValues(tc.method)); got != want {
				t.Errorf("sori_overload_shed_total{method=%q} = %v, want %v", tc.method, got, want)
			}
			waits := uint64(0)
			if tc.stamped {
				waits = 1
			}
			if got := waitsObserved(t, reg); got != waits {
				t.Errorf("receive waits observed: %d, want %d", got, waits)
			}
		})
	}
}

// A method the sender made up is counted as "other".
func TestShedLabelsInventedMethods(t *testing.T) {
	s := New(time.Millisecond, nil, nil)
	now := time.Now()
	if !s.Shed(request(t, "XYZZY", ""), now.Add(-time.Second), now) {
		t.Fatal("an invented method outside a dialog is new work too")
	}
	if got := testutil.ToFloat64(s.shed.WithLabelValues("other")); got != 1 {
		t.Fatalf(`sori_overload_shed_total{method="other"} = %v, want 1`, got)
	}
}

func waitsObserved(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sori_sip_receive_wait_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no sori_sip_receive_wait_seconds")
	return 0
}
