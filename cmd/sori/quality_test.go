package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather/redisweather"
	"github.com/sori-voice/sori/sip/weather/weathertest"
)

// qualityRecords: in the last hours, 40 call sides on carrier-a (4 of them
// at 2 % loss, MOS 3.9; the rest clean, 4.4) and 10 on carrier-b (clean);
// and one call two days ago, outside --since 24h.
func qualityRecords() []calls.Record {
	at := time.Now().UTC().Add(-2 * time.Hour)
	var recs []calls.Record
	for i := range 40 {
		lost, mos := int64(0), 4.4
		if i < 4 {
			lost, mos = 20, 3.9
		}
		recs = append(recs, weathertest.Record(fmt.Sprint("a", i), at, weathertest.Side("carrier-a", "lte", 1000, lost, 10, mos, map[string]string{"plan": "lte-62"}), nil))
	}
	for i := range 10 {
		recs = append(recs, weathertest.Record(fmt.Sprint("b", i), at, weathertest.Side("carrier-b", "wifi", 1000, 0, 10, 4.4, nil), nil))
	}
	recs = append(recs, weathertest.Record("old", at.Add(-48*time.Hour), weathertest.Side("carrier-c", "lte", 1000, 900, 10, 1, nil), nil))
	return recs
}

func writeRecords(t *testing.T, recs []calls.Record) string {
	t.Helper()
	var b bytes.Buffer
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "cdr.jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runQ(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := runQuality(args, &out); err != nil {
		t.Fatalf("sori quality %v: %v", args, err)
	}
	return out.String()
}

func TestQualityTable(t *testing.T) {
	path := writeRecords(t, qualityRecords())
	got := runQ(t, "--records", path, "--since", "24h", "--by", "network,hop")
	// 4/40 over 1 %: Wilson [0.0396, 0.2305]; MOS mean 4.35 ± 0.047.
	want := `NETWORK    HOP     CALLS  LOSS %  >1 % LOSS [95 % CI]  P90 %  MOS [95 % CI]
carrier-a  uplink  40     0.20    10.0 [4.0-23.1]      0.00   4.35 [4.30-4.40]
carrier-b  uplink  10*    0.00    0.0 [0.0-27.8]       0.00   4.40 [4.40-4.40]
* fewer than 30 calls: too few to compare
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// --min-calls, another grouping, a tag.
	got = runQ(t, "--records", path, "--by", "tag:plan,access", "--min-calls", "5")
	if !strings.Contains(got, "TAG:PLAN  ACCESS") || !strings.Contains(got, "lte-62    lte     40 ") || strings.Contains(got, "*") || strings.Contains(got, "wifi") {
		t.Fatalf("%s", got)
	}
	// The old call counts once --since reaches it.
	if got := runQ(t, "--records", path, "--since", "3d", "--by", "network"); !strings.Contains(got, "carrier-c  1*") {
		t.Fatalf("%s", got)
	}
	if got := runQ(t, "--records", path, "--since", "30m"); got != "no calls with media in the last 30m0s\n" {
		t.Fatalf("%q", got)
	}
}

func TestQualityCSV(t *testing.T) {
	path := writeRecords(t, qualityRecords())
	rows, err := csv.NewReader(strings.NewReader(runQ(t, "--records", path, "--csv", "--by", "network"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || strings.Join(rows[0], ",") != "network,calls,expected,lost,loss_pct,over1_share,over1_lo,over1_hi,over5_share,over5_lo,over5_hi,p50_loss_pct,p90_loss_pct,mos_n,mos_mean,mos_lo,mos_hi,jitter_ms,enough" {
		t.Fatalf("%v", rows)
	}
	a := strings.Join(rows[1], ",")
	if a != "carrier-a,40,40000,80,0.2,0.1,0.0396,0.2305,0,0,0.0876,0,0,40,4.35,4.303,4.397,10,true" {
		t.Fatalf("%s", a)
	}
	if !strings.HasSuffix(strings.Join(rows[2], ","), ",false") {
		t.Fatalf("%v", rows[2])
	}
}

// TestQualityRedis: the table from the nodes' cells in Redis is the one
// computed from the record file.
func TestQualityRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	recs := qualityRecords()
	s := redisweather.New(rdb, redisweather.Options{})
	for _, r := range recs {
		if err := s.Add(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	path := writeRecords(t, recs)
	for _, args := range [][]string{{"--by", "network,hop"}, {"--by", "tag:plan", "--csv"}, {"--since", "7d", "--by", "network,access"}} {
		fromRedis := runQ(t, append([]string{"--redis", srv.URL()}, args...)...)
		fromFile := runQ(t, append([]string{"--records", path}, args...)...)
		if fromRedis != fromFile {
			t.Fatalf("%v: redis\n%s\nfile\n%s", args, fromRedis, fromFile)
		}
	}
}

func TestQualityUsage(t *testing.T) {
	path := writeRecords(t, qualityRecords())
	for _, args := range [][]string{
		{},
		{"--records", path, "--redis", "redis://127.0.0.1:1/0"},
		{"--records", path, "--since", "yesterday"},
		{"--records", path, "--since", "0s"},
		{"--records", path, "--by", "city"},
		{"--records", path, "--by", "network,,hop"},
		{"--records", path, "--min-calls", "0"},
		{"--records", path, "extra"},
		{"--bogus"},
	} {
		err := runQuality(args, &bytes.Buffer{})
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	var out bytes.Buffer
	if err := runQuality([]string{"-h"}, &out); err != nil || !strings.Contains(out.String(), "--records FILE") || !strings.Contains(out.String(), "-min-calls") {
		t.Fatalf("help: %v %s", err, out.String())
	}
	// A missing or broken file is an error, not an empty table.
	if err := runQuality([]string{"--records", filepath.Join(t.TempDir(), "none.jsonl")}, &bytes.Buffer{}); err == nil {
		t.Fatal("a missing file")
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"call_id\":\"a\"}\n{oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runQuality([]string{"--records", bad}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a broken file: %v", err)
	}
}

// TestQualityMapFlushesOnStop: with the Redis store a node's records reach
// Redis at its flush, and a stop (the closers run on SIGTERM, after the
// last record) flushes what is held: sori quality --redis then answers as
// the record file.
func TestQualityMapFlushesOnStop(t *testing.T) {
	srv := redistest.Start(t)
	st, err := redisstore.Open(srv.URL(), redisstore.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := config.Default()
	cfg.Quality.FlushEvery = config.Duration(10 * time.Minute) // no tick in the test
	q := newQualityMap(&cfg, st, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	recs := qualityRecords()
	for _, r := range recs {
		for _, s := range q.sinks {
			if err := s.Write(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := writeRecords(t, recs)
	args := []string{"--by", "network,hop,access"}
	fromFile := runQ(t, append([]string{"--records", path}, args...)...)
	if got := runQ(t, append([]string{"--redis", srv.URL()}, args...)...); got == fromFile || !strings.HasPrefix(got, "no calls") {
		t.Fatalf("in Redis before the flush:\n%s", got)
	}
	for _, c := range q.closers {
		c()
	}
	if got := runQ(t, append([]string{"--redis", srv.URL()}, args...)...); got != fromFile {
		t.Fatalf("after the stop: redis\n%s\nfile\n%s", got, fromFile)
	}
}
