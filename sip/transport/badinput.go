package transport

import (
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// badInput counts and logs what the transport refuses. Anyone can send
// anything: the log is rate limited (logBurst lines, then one per
// logEvery) and shows at most logBytes of a message, so garbage cannot
// fill the disk.
type badInput struct {
	log     *slog.Logger
	counter *prometheus.CounterVec

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

const (
	logBurst = 10
	logEvery = time.Second
	logBytes = 160
)

func newBadInput(log *slog.Logger, reg prometheus.Registerer) *badInput {
	b := &badInput{log: log, tokens: logBurst, last: time.Now(),
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_sip_bad_messages_total",
			Help: "Received messages refused before the handler chain because they are malformed, by transport and answer (the status code sent, or none).",
		}, []string{"transport", "answer"})}
	if reg != nil {
		reg.MustRegister(b.counter)
	}
	return b
}

func (b *badInput) refused(c Conn, code int, reason string, data []byte, answered bool) {
	answer := "none"
	if answered {
		answer = strconv.Itoa(code)
	}
	b.counter.WithLabelValues(c.Transport(), answer).Inc()
	suppressed, ok := b.allow()
	if !ok {
		return
	}
	if len(data) > logBytes {
		data = data[:logBytes]
	}
	attrs := []any{"transport", c.Transport(), "source", c.Remote().String(), "fault", reason, "answer", answer,
		"message", strconv.Quote(string(data))}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	b.log.Info("bad SIP message refused", attrs...)
}

// allow takes a log token; it returns how many lines were suppressed since
// the last one logged.
func (b *badInput) allow() (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens += now.Sub(b.last).Seconds() / logEvery.Seconds()
	if b.tokens > logBurst {
		b.tokens = logBurst
	}
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return 0, false
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return n, true
}
