package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/sip/weather"
	"github.com/sori-voice/sori/sip/weather/memweather"
	"github.com/sori-voice/sori/sip/weather/redisweather"
)

const qualityUsage = "usage: sori quality [--since 24h] [--by network,hop] [--csv] [--min-calls 30] (--records FILE | --redis URL)"

// runQuality prints call quality per group of the last --since: from the
// cells in Redis that the nodes keep (--redis), or computed afresh from a
// call-record file (--records, cdr.file).
func runQuality(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sori quality", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	since := fs.String("since", "24h", "how far back (Go duration or days: 90m, 24h, 7d)")
	by := fs.String("by", "network,hop", "dimensions: network, hop, access, hour, tag:KEY")
	asCSV := fs.Bool("csv", false, "CSV instead of a table")
	redisURL := fs.String("redis", "", "read the cells from Redis (redis://, redis-sentinel://, redis-cluster://)")
	records := fs.String("records", "", "compute from a call-record file (JSON lines)")
	minCalls := fs.Int("min-calls", weather.DefaultMinCalls, "calls below which a row is not comparable")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, qualityUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil
		}
		return usageError{fmt.Errorf("%v\n%s", err, qualityUsage)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected %q\n%s", fs.Arg(0), qualityUsage)}
	}
	if (*redisURL == "") == (*records == "") {
		return usageError{errors.New("give one of --records FILE and --redis URL\n" + qualityUsage)}
	}
	window, err := weather.ParseDuration(*since)
	if err != nil || window <= 0 {
		return usageError{fmt.Errorf("--since %q: a positive duration (90m, 24h, 7d)", *since)}
	}
	dims, err := weather.ParseBy(*by)
	if err != nil {
		return usageError{fmt.Errorf("--by: %v", err)}
	}
	if *minCalls < 1 {
		return usageError{errors.New("--min-calls: at least 1")}
	}
	now := time.Now()
	q := weather.Query{From: now.Add(-window), To: now, By: dims, MinCalls: *minCalls}
	if err := q.Check(); err != nil {
		var pe *weather.ParamError
		if errors.As(err, &pe) {
			return usageError{fmt.Errorf("--%s: %s", strings.ReplaceAll(pe.Param, "_", "-"), pe.Msg)}
		}
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var agg weather.Aggregator
	if *records != "" {
		m := memweather.New(memweather.Options{Retention: -1}) // every record of the file
		if _, err := weather.Rebuild(ctx, m, weather.ReadRecordsFile(*records)); err != nil {
			return err
		}
		agg = m
	} else {
		st, err := redisstore.Open(*redisURL, redisstore.Options{Timeout: 10 * time.Second})
		if err != nil {
			return err
		}
		defer st.Close()
		// The nodes' retention decides what Redis still holds; the query's
		// own must not cut the period asked for.
		agg = redisweather.New(st.Client(), redisweather.Options{Retention: window + 2*time.Hour})
	}
	rows, err := agg.Query(ctx, q)
	if err != nil {
		return err
	}
	if *asCSV {
		return qualityCSV(stdout, dims, rows)
	}
	return qualityTable(stdout, dims, rows, *minCalls, window)
}

func qualityTable(out io.Writer, dims []string, rows []weather.Row, minCalls int, window time.Duration) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintf(out, "no calls with media in the last %v\n", window)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	var head []string
	for _, d := range dims {
		head = append(head, strings.ToUpper(d))
	}
	head = append(head, "CALLS", "LOSS %", ">1 % LOSS [95 % CI]", "P90 %", "MOS [95 % CI]")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	few := false
	for _, r := range rows {
		var cols []string
		for _, d := range dims {
			cols = append(cols, r.Dims[d])
		}
		calls := strconv.FormatInt(r.Calls, 10)
		if !r.Enough {
			calls += "*"
			few = true
		}
		cols = append(cols, calls, optFloat(r.LossPct, 2),
			fmt.Sprintf("%.1f [%.1f-%.1f]", 100*r.Over1.Share, 100*r.Over1.Lo, 100*r.Over1.Hi),
			strconv.FormatFloat(r.P90LossPct, 'f', 2, 64), mosText(r.MOS))
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if few {
		_, err := fmt.Fprintf(out, "* fewer than %d calls: too few to compare\n", minCalls)
		return err
	}
	return nil
}

func mosText(m *weather.Mean) string {
	switch {
	case m == nil:
		return "-"
	case m.Lo == nil:
		return strconv.FormatFloat(m.Mean, 'f', 2, 64)
	}
	return fmt.Sprintf("%.2f [%.2f-%.2f]", m.Mean, *m.Lo, *m.Hi)
}

func optFloat(v *float64, prec int) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', prec, 64)
}

// qualityCSV writes every figure of the rows; an absent one is empty.
func qualityCSV(out io.Writer, dims []string, rows []weather.Row) error {
	w := csv.NewWriter(out)
	head := append([]string{}, dims...)
	head = append(head, "calls", "expected", "lost", "loss_pct", "over1_share", "over1_lo", "over1_hi",
		"over5_share", "over5_lo", "over5_hi", "p50_loss_pct", "p90_loss_pct", "mos_n", "mos_mean", "mos_lo", "mos_hi", "jitter_ms", "enough")
	if err := w.Write(head); err != nil {
		return err
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return f(*v)
	}
	for _, r := range rows {
		var rec []string
		for _, d := range dims {
			rec = append(rec, r.Dims[d])
		}
		rec = append(rec, strconv.FormatInt(r.Calls, 10), strconv.FormatInt(r.Expected, 10), strconv.FormatInt(r.Lost, 10), opt(r.LossPct),
			f(r.Over1.Share), f(r.Over1.Lo), f(r.Over1.Hi), f(r.Over5.Share), f(r.Over5.Lo), f(r.Over5.Hi),
			f(r.P50LossPct), f(r.P90LossPct))
		if r.MOS != nil {
			rec = append(rec, strconv.FormatInt(r.MOS.N, 10), f(r.MOS.Mean), opt(r.MOS.Lo), opt(r.MOS.Hi))
		} else {
			rec = append(rec, "0", "", "", "")
		}
		rec = append(rec, f(r.JitterMS), strconv.FormatBool(r.Enough))
		if err := w.Write(rec); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}
