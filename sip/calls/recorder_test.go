package calls

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestRecorder(t *testing.T) (*Recorder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return NewRecorder(slog.New(slog.NewTextHandler(io.Discard, nil)), reg), reg
}

// mediaRecord is an answered call between a caller on carrier-c over LTE
// whose uplink lost 5 % and whose phone reported its downlink, and a
// callee on no configured network whose phone sent no RTCP.
func mediaRecord() Record {
	r := sample("media")
	r.CallerMedia = &MediaQuality{Network: "carrier-c", Access: "lte", Sent: 400, Lost: 20, LossPct: 5, JitterMS: 12, MOS: 3.6,
		DownLossPct: 3, DownJitterMS: 8, RTTMS: 40}
	r.CalleeMedia = &MediaQuality{Sent: 400, LossPct: 0, JitterMS: 2, MOS: 4.4}
	return r
}

func TestRecorderMediaLabels(t *testing.T) {
	rec, reg := newTestRecorder(t)
	rec.Write(mediaRecord())
	noMedia := sample("unanswered")
	noMedia.Disposition = Busy
	rec.Write(noMedia)

	body := gatherText(t, reg)
	names := map[string]string{"loss": "sori_media_loss_ratio", "jitter": "sori_media_jitter_seconds", "mos": "sori_media_mos"}
	count := func(metric string, labels ...string) float64 {
		t.Helper()
		series := fmt.Sprintf("%s_count{access=%q,hop=%q,network=%q} ", names[metric], labels[1], labels[2], labels[0])
		for _, l := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(l, series); ok {
				var n float64
				fmt.Sscan(v, &n)
				return n
			}
		}
		return 0
	}
	for _, c := range []struct {
		metric string
		labels []string
		want   float64
	}{
		{"loss", []string{"carrier-c", "lte", "uplink"}, 1},
		{"loss", []string{"carrier-c", "lte", "downlink"}, 1},
		{"jitter", []string{"carrier-c", "lte", "uplink"}, 1},
		{"jitter", []string{"carrier-c", "lte", "downlink"}, 1},
		{"mos", []string{"carrier-c", "lte", "uplink"}, 1},
		{"mos", []string{"carrier-c", "lte", "downlink"}, 0}, // the downlink has no MOS
		// A side with no network or access is other/unknown; its phone sent
		// no RTCP, so it has no downlink.
		{"loss", []string{"other", "unknown", "uplink"}, 1},
		{"loss", []string{"other", "unknown", "downlink"}, 0},
		{"mos", []string{"other", "unknown", "uplink"}, 1},
	} {
		if got := count(c.metric, c.labels...); got != c.want {
			t.Errorf("%s%v: %v observations, want %v", c.metric, c.labels, got, c.want)
		}
	}
	// The figures observed: ratios and seconds.
	if got := testutil.ToFloat64(rec.ended.WithLabelValues(Answered)); got != 1 {
		t.Errorf("answered calls %v", got)
	}
	for _, line := range []string{
		`sori_media_loss_ratio_sum{access="lte",hop="uplink",network="carrier-c"} 0.05`,
		`sori_media_loss_ratio_sum{access="lte",hop="downlink",network="carrier-c"} 0.03`,
		`sori_media_loss_ratio_bucket{access="lte",hop="downlink",network="carrier-c",le="0.02"} 0`,
		`sori_media_loss_ratio_bucket{access="lte",hop="downlink",network="carrier-c",le="0.03"} 1`,
		`sori_media_jitter_seconds_sum{access="lte",hop="downlink",network="carrier-c"} 0.008`,
		`sori_media_jitter_seconds_sum{access="lte",hop="uplink",network="carrier-c"} 0.012`,
		`sori_media_mos_sum{access="lte",hop="uplink",network="carrier-c"} 3.6`,
		`sori_media_mos_sum{access="unknown",hop="uplink",network="other"} 4.4`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
	if strings.Contains(body, `sori_media_mos_count{access="lte",hop="downlink"`) {
		t.Error("a downlink MOS was observed")
	}
}

// A phone that reported only a round trip (a perfect downlink, no jitter)
// still counts on the downlink, with zero loss.
func TestRecorderDownlinkFromRTTAlone(t *testing.T) {
	rec, reg := newTestRecorder(t)
	r := mediaRecord()
	r.CallerMedia.DownLossPct, r.CallerMedia.DownJitterMS = 0, 0
	rec.Write(r)
	body := gatherText(t, reg)
	if !strings.Contains(body, `sori_media_loss_ratio_bucket{access="lte",hop="downlink",network="carrier-c",le="0"} 1`+"\n") {
		t.Fatalf("no zero-loss downlink observation:\n%s", body)
	}
}

func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			l := strings.Join(labels, ",")
			name := mf.GetName()
			if h := m.GetHistogram(); h != nil {
				for _, bk := range h.GetBucket() {
					fmt.Fprintf(&b, "%s_bucket{%s,le=%q} %v\n", name, l, fmtFloat(bk.GetUpperBound()), bk.GetCumulativeCount())
				}
				fmt.Fprintf(&b, "%s_sum{%s} %v\n%s_count{%s} %v\n", name, l, fmtFloat(h.GetSampleSum()), name, l, h.GetSampleCount())
			}
		}
	}
	return b.String()
}

func fmtFloat(v float64) string { return strings.TrimSuffix(fmt.Sprintf("%.6g", v), ".0") }

// exported lists the series names sori's Recorder exports (a histogram's
// _bucket, _sum and _count) with the labels each carries, from what its
// registry gathers once every kind of observation was made.
func exported(t *testing.T) map[string][]string {
	t.Helper()
	rec, reg := newTestRecorder(t)
	rec.Write(mediaRecord())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, mf := range mfs {
		var labels []string
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(labels, lp.GetName()) {
					labels = append(labels, lp.GetName())
				}
			}
		}
		if mf.GetType().String() == "HISTOGRAM" {
			out[mf.GetName()+"_bucket"] = append(slices.Clone(labels), "le")
			out[mf.GetName()+"_sum"] = labels
			out[mf.GetName()+"_count"] = labels
			continue
		}
		out[mf.GetName()] = labels
	}
	return out
}

// The Grafana dashboard queries only metrics and labels sori exports.
func TestGrafanaDashboardQueriesSorisMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/grafana/sori-quality.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string            `json:"uid"`
		Title      string            `json:"title"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type       string          `json:"type"`
				Name       string          `json:"name"`
				Query      json.RawMessage `json:"query"`
				Definition string          `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("testdata/grafana/sori-quality.json is not valid JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Fatal("the dashboard has no uid or title")
	}
	known := exported(t)
	vars := map[string]bool{}
	hasDatasourceVar := false
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			var q string
			if json.Unmarshal(v.Query, &q) != nil || q != "prometheus" {
				t.Errorf("datasource variable %s is not of Prometheus: %s", v.Name, v.Query)
			}
			hasDatasourceVar = true
		case "query":
			m := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`).FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("variable %s: query %q is not label_values(METRIC, LABEL)", v.Name, v.Definition)
				continue
			}
			if labels, ok := known[m[1]]; !ok || !slices.Contains(labels, m[2]) {
				t.Errorf("variable %s: %s has no label %s (sori exports %v)", v.Name, m[1], m[2], labels)
			}
		}
	}
	if !hasDatasourceVar {
		t.Error("no Prometheus datasource variable")
	}

	type panel struct {
		Type       string            `json:"type"`
		Title      string            `json:"title"`
		Repeat     string            `json:"repeat"`
		Datasource json.RawMessage   `json:"datasource"`
		Panels     []json.RawMessage `json:"panels"`
		Targets    []struct {
			Expr       string          `json:"expr"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"targets"`
	}
	var walk func([]json.RawMessage)
	exprs := 0
	metricsUsed := map[string]bool{}
	types := map[string]bool{}
	walk = func(list []json.RawMessage) {
		for _, r := range list {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			types[p.Type] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Repeat != "" && !vars[p.Repeat] {
				t.Errorf("panel %q repeats over an undefined variable %q", p.Title, p.Repeat)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				for _, ds := range []json.RawMessage{p.Datasource, tg.Datasource} {
					if !strings.Contains(string(ds), `"${datasource}"`) {
						t.Errorf("panel %q does not use the datasource variable: %s", p.Title, ds)
					}
				}
				exprs++
				metrics, labels, err := promqlRefs(tg.Expr)
				if err != nil {
					t.Errorf("panel %q: %v\n%s", p.Title, err, tg.Expr)
					continue
				}
				if len(metrics) == 0 {
					t.Errorf("panel %q: no metric in %s", p.Title, tg.Expr)
				}
				var allowed []string
				for _, m := range metrics {
					ls, ok := known[m]
					if !ok {
						t.Errorf("panel %q: sori exports no %s", p.Title, m)
					}
					metricsUsed[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")] = true
					allowed = append(allowed, ls...)
				}
				for _, l := range labels {
					if !slices.Contains(allowed, l) {
						t.Errorf("panel %q: label %s is not one of %v's (%v)", p.Title, l, metrics, allowed)
					}
				}
				for _, v := range regexp.MustCompile(`\$\{?([a-zA-Z_]+)`).FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
						t.Errorf("panel %q uses the undefined variable $%s", p.Title, v[1])
					}
				}
			}
		}
	}
	walk(dash.Panels)
	if exprs == 0 {
		t.Fatal("no queries in the dashboard")
	}
	for _, m := range []string{"sori_media_loss_ratio", "sori_media_mos"} {
		if !metricsUsed[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	if !types["heatmap"] {
		t.Error("no heat map panel")
	}
}

// The README's Metrics list names each media histogram with its labels.
func TestREADMEListsMediaLabels(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"sori_media_loss_ratio", "sori_media_jitter_seconds", "sori_media_mos"} {
		if !strings.Contains(string(raw), "`"+m+"{network,access,hop}`") {
			t.Errorf("README.md does not list `%s{network,access,hop}`", m)
		}
	}
}

func TestPromQLRefs(t *testing.T) {
	metrics, labels, err := promqlRefs(`1 - sum by (network) (increase(a_bucket{hop="$hop", le="0.01"}[$__rate_interval])) / ignoring(le) sum(rate(b_count[5m] offset 1h)) without (x) and on(y) histogram_quantile(0.9, c)`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(metrics, []string{"a_bucket", "b_count", "c"}) || !slices.Equal(labels, []string{"network", "hop", "le", "le", "x", "y"}) {
		t.Fatalf("metrics %v labels %v", metrics, labels)
	}
	for _, bad := range []string{`sum(a`, `a{b="c"`, `nosuchfunction(a)`, `a{b}`, `a{"b"="c"}`} {
		if _, _, err := promqlRefs(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// promqlFuncs are PromQL's functions and aggregation operators.
var promqlFuncs = strings.Fields(`abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min
count_over_time day_of_month day_of_week day_of_year days_in_month delta deriv exp floor histogram_quantile
histogram_count histogram_sum histogram_fraction histogram_avg histogram_stddev histogram_stdvar holt_winters
hour idelta increase irate label_join label_replace last_over_time ln log10 log2 max_over_time min_over_time
minute month predict_linear present_over_time quantile_over_time rate resets round scalar sgn sort sort_desc
sqrt stddev_over_time stdvar_over_time sum_over_time time timestamp vector year
sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio`)

// promqlRefs lists the metric names and the label names a PromQL
// expression refers to (matchers, by/without, on/ignoring,
// group_left/right). Ranges ([5m], [$__rate_interval]) are skipped, so
// Grafana's variables may stand in them and in strings. It is a lexer with
// just enough grammar for that, not a full parser: an unknown function,
// an unbalanced bracket or a malformed matcher is an error.
func promqlRefs(expr string) (metrics, labels []string, err error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return nil, nil, err
	}
	depth := 0
	for i := 0; i < len(toks); i++ {
		tk := toks[i]
		next := ""
		if i+1 < len(toks) {
			next = toks[i+1].s
		}
		switch {
		case tk.kind == tokIdent:
			switch tk.s {
			case "by", "without", "on", "ignoring", "group_left", "group_right":
				if next != "(" {
					if tk.s == "group_left" || tk.s == "group_right" {
						continue
					}
					return nil, nil, fmt.Errorf("%s without a label list", tk.s)
				}
				j := i + 2
				for ; j < len(toks) && toks[j].s != ")"; j++ {
					switch {
					case toks[j].kind == tokIdent:
						labels = append(labels, toks[j].s)
					case toks[j].s != ",":
						return nil, nil, fmt.Errorf("%q in the label list of %s", toks[j].s, tk.s)
					}
				}
				if j == len(toks) {
					return nil, nil, fmt.Errorf("unclosed label list of %s", tk.s)
				}
				i = j
			case "and", "or", "unless", "bool", "offset":
			default:
				if next == "(" || next == "by" || next == "without" { // sum by (x) (...)
					if !slices.Contains(promqlFuncs, tk.s) {
						return nil, nil, fmt.Errorf("unknown function %s", tk.s)
					}
					continue
				}
				metrics = append(metrics, tk.s)
			}
		case tk.s == "{":
			j := i + 1
			for ; j < len(toks) && toks[j].s != "}"; j++ {
				if j+2 >= len(toks) || toks[j].kind != tokIdent || toks[j+1].kind != tokOp || toks[j+2].kind != tokString {
					return nil, nil, fmt.Errorf("a malformed matcher at %q", toks[j].s)
				}
				if !slices.Contains([]string{"=", "!=", "=~", "!~"}, toks[j+1].s) {
					return nil, nil, fmt.Errorf("matcher operator %q", toks[j+1].s)
				}
				labels = append(labels, toks[j].s)
				j += 2
				if j+1 < len(toks) && toks[j+1].s == "," {
					j++
				}
			}
			if j == len(toks) {
				return nil, nil, fmt.Errorf("unclosed {")
			}
			i = j
		case tk.s == "(":
			depth++
		case tk.s == ")":
			if depth--; depth < 0 {
				return nil, nil, fmt.Errorf("unbalanced )")
			}
		}
	}
	if depth != 0 {
		return nil, nil, fmt.Errorf("unbalanced (")
	}
	return metrics, labels, nil
}

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokNumber
	tokOp
	tokPunct
)

type token struct {
	kind tokKind
	s    string
}

func lexPromQL(s string) ([]token, error) {
	var out []token
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#': // a comment, to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '[': // a range or subquery: nothing in it names a metric
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unclosed [")
			}
			i += j + 1
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unclosed string")
			}
			out = append(out, token{tokString, s[i+1 : j]})
			i = j + 1
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			out = append(out, token{tokIdent, s[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(s) && (isIdent(s[j]) || s[j] == '.') {
				j++
			}
			out = append(out, token{tokNumber, s[i:j]})
			i = j
		case strings.ContainsRune("(){},", rune(c)):
			out = append(out, token{tokPunct, string(c)})
			i++
		case strings.ContainsRune("=!~<>+-*/%^", rune(c)):
			j := i + 1
			if j < len(s) && strings.ContainsRune("=~", rune(s[j])) {
				j++
			}
			out = append(out, token{tokOp, s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q", c)
		}
	}
	return out, nil
}
