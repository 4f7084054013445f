package page

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather"
	"github.com/sori-voice/sori/sip/weather/memweather"
	"github.com/sori-voice/sori/sip/weather/weathertest"
	"github.com/sori-voice/sori/sip/weather/worst"
)

var now = time.Date(2026, 12, 1, 14, 30, 0, 0, time.UTC)

// server: 29 call sides on "small", 40 on "large" (some with loss), in
// the hour before now.
func server(t *testing.T, public bool) (*httptest.Server, *worst.List) {
	t.Helper()
	agg := memweather.New(memweather.Options{Now: func() time.Time { return now }})
	w := worst.New(0, 0, func() time.Time { return now })
	add := func(id, network string, lost int64) {
		r := weathertest.Record(id, now.Add(-time.Hour), weathertest.Side(network, "lte", 1000, lost, 8, 4.2, map[string]string{"plan": "p1"}), nil)
		if err := agg.Add(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		w.Add(r)
	}
	for i := range 29 {
		add(fmt.Sprint("s", i), "small", 0)
	}
	for i := range 40 {
		add(fmt.Sprint("l", i), "large", int64(i))
	}
	mux := http.NewServeMux()
	New(Options{Agg: agg, Worst: w, Public: public, TagKeys: []string{"plan", "device", "bad=key"}, Now: func() time.Time { return now }}).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, w
}

func get(t *testing.T, u string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// The raw body: no transparent decompression.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestAPI(t *testing.T) {
	srv, _ := server(t, false)
	resp, b := get(t, srv.URL+"/api/quality?from=-2h&by=network,hop&metric=p90")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.From.Equal(now.Add(-2*time.Hour)) || !r.To.Equal(now) || r.Metric != "p90" || r.MinCalls != 30 || r.Public || len(r.Rows) != 2 {
		t.Fatalf("%+v", r)
	}
	large, small := r.Rows[0], r.Rows[1]
	if large.Dims["network"] != "large" || large.Calls != 40 || !large.Enough || small.Dims["network"] != "small" || small.Calls != 29 || small.Enough {
		t.Fatalf("rows %+v", r.Rows)
	}
	if large.Value == nil || *large.Value != large.P90LossPct {
		t.Fatalf("value %+v", large)
	}
	// The JSON names, as documented.
	var raw struct {
		Rows []map[string]json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw.Rows[0] {
		keys = append(keys, k)
	}
	want := "calls dims enough expected jitter_ms loss_pct lost mos over1 over5 p50_loss_pct p90_loss_pct value"
	if got := strings.Join(slices.Sorted(slices.Values(keys)), " "); got != want {
		t.Fatalf("row keys %s, want %s", got, want)
	}
	if !strings.Contains(string(raw.Rows[0]["over1"]), `"lo":`) || !strings.Contains(string(raw.Rows[0]["mos"]), `"hi":`) {
		t.Fatalf("%s %s", raw.Rows[0]["over1"], raw.Rows[0]["mos"])
	}
	// Defaults: the last 24 h by network and hop, over1.
	if _, b := get(t, srv.URL+"/api/quality"); !strings.Contains(string(b), `"by":["network","hop"],"metric":"over1"`) {
		t.Fatalf("defaults: %s", b)
	}
	// RFC 3339 bounds and a tag dimension.
	q := url.Values{"from": {now.Add(-3 * time.Hour).Format(time.RFC3339)}, "to": {now.Format(time.RFC3339)}, "by": {"tag:plan, network"}}
	if _, b := get(t, srv.URL+"/api/quality?"+q.Encode()); !strings.Contains(string(b), `"dims":{"network":"large","tag:plan":"p1"}`) {
		t.Fatalf("tags: %s", b)
	}
}

func TestAPIBadParameters(t *testing.T) {
	srv, _ := server(t, true)
	for _, tt := range []struct{ query, param string }{
		{"from=yesterday", "from"},
		{"from=-24x", "from"},
		{"from=-xd", "from"},
		{"to=2026-13-01T00:00:00Z", "to"},
		{"from=-1h&to=-2h", "to"},
		{"by=city", "by"},
		{"by=network,,hop", "by"},
		{"by=network,network", "by"},
		{"by=tag:a,tag:b", "by"},
		{"metric=rfactor", "metric"},
		{"limit=5", "limit"},
		{"by=network&by=hop", "by"},
	} {
		for _, path := range []string{"/api/quality?", "/api/quality/public?"} {
			resp, b := get(t, srv.URL+path+tt.query)
			var e errorBody
			_ = json.Unmarshal(b, &e)
			if resp.StatusCode != 400 || e.Param != tt.param || !strings.HasPrefix(e.Error, tt.param+": ") || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
				t.Errorf("%s%s: %d %s", path, tt.query, resp.StatusCode, b)
			}
		}
	}
	if resp, _ := get(t, srv.URL+"/api/quality/worst?n=3"); resp.StatusCode != 400 {
		t.Errorf("worst with a parameter: %d", resp.StatusCode)
	}
}

// TestPublicGating: a cell of 29 calls is absent from the public API and
// present, greyed (enough false), in the operator's.
func TestPublicGating(t *testing.T) {
	srv, _ := server(t, true)
	for _, tt := range []struct {
		path string
		want map[string]bool
	}{
		{"/api/quality?by=network", map[string]bool{"large": true, "small": false}},
		{"/api/quality/public?by=network", map[string]bool{"large": true}},
		{"/api/quality/public?by=network,hour,tag:plan", map[string]bool{"large": true}},
	} {
		_, b := get(t, srv.URL+tt.path)
		var r Response
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, row := range r.Rows {
			got[row.Dims["network"]] = row.Enough
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) || r.Public != strings.Contains(tt.path, "public") {
			t.Errorf("%s: %v, want %v", tt.path, got, tt.want)
		}
	}
	// The public page names the public API and no call list.
	_, b := get(t, srv.URL+"/quality/public")
	if !strings.Contains(string(b), `data-api="/api/quality/public"`) || !strings.Contains(string(b), `data-worst=""`) {
		t.Fatalf("public page: %s", b)
	}
	// Not enabled: neither public route exists.
	off, _ := server(t, false)
	for _, p := range []string{"/quality/public", "/api/quality/public"} {
		if resp, _ := get(t, off.URL+p); resp.StatusCode != 404 {
			t.Errorf("%s served while quality.public is off: %d", p, resp.StatusCode)
		}
	}
}

// TestRegisterPublic: a public listener serves the public page, its API
// and the assets, nothing of the operator's.
func TestRegisterPublic(t *testing.T) {
	mux := http.NewServeMux()
	New(Options{Agg: memweather.New(memweather.Options{})}).RegisterPublic(mux)
	for path, want := range map[string]int{
		"/quality/public": 200, "/api/quality/public": 200, "/quality/assets/quality.js": 200,
		"/quality": 404, "/api/quality": 404, "/api/quality/worst": 404,
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}

func TestWorstAPI(t *testing.T) {
	srv, _ := server(t, false)
	_, b := get(t, srv.URL+"/api/quality/worst")
	var r WorstResponse
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Calls) != 39 || r.Calls[0].CallID != "l39" || r.Calls[0].Record != "/api/calls/l39" || r.Calls[0].LossPct != 3.9 {
		t.Fatalf("%d calls, first %+v", len(r.Calls), r.Calls)
	}
	// Without a list: an empty one.
	mux := http.NewServeMux()
	New(Options{Agg: memweather.New(memweather.Options{})}).Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/quality/worst", nil))
	if strings.TrimSpace(rec.Body.String()) != `{"calls":[]}` {
		t.Fatalf("%s", rec.Body)
	}
}

type failing struct{}

func (failing) Add(context.Context, calls.Record) error { return nil }
func (failing) Query(context.Context, weather.Query) ([]weather.Row, error) {
	return nil, errors.New("redis: connection refused")
}

func TestAPIBackendDown(t *testing.T) {
	h := New(Options{Agg: failing{}, Log: discard()})
	rec := httptest.NewRecorder()
	h.API().ServeHTTP(rec, httptest.NewRequest("GET", "/api/quality", nil))
	if rec.Code != 503 || strings.Contains(rec.Body.String(), "refused") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

// TestContentTypes: the pages and every embedded asset are served with
// their types, the vendored echarts unchanged, gzipped on request.
func TestContentTypes(t *testing.T) {
	srv, _ := server(t, true)
	for _, tt := range []struct{ path, ctype string }{
		{"/quality", "text/html; charset=utf-8"},
		{"/quality/public", "text/html; charset=utf-8"},
		{"/quality/assets/echarts.min.js", "text/javascript; charset=utf-8"},
		{"/quality/assets/quality.js", "text/javascript; charset=utf-8"},
		{"/quality/assets/quality.css", "text/css; charset=utf-8"},
		{"/quality/assets/LICENSE-echarts", "text/plain; charset=utf-8"},
		{"/quality/assets/NOTICE-echarts", "text/plain; charset=utf-8"},
		{"/quality/assets/LICENSE-zrender", "text/plain; charset=utf-8"},
		{"/api/quality", "application/json; charset=utf-8"},
	} {
		resp, b := get(t, srv.URL+tt.path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tt.ctype || resp.Header.Get("X-Content-Type-Options") != "nosniff" || len(b) == 0 {
			t.Errorf("%s: %d %q", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	resp, b := get(t, srv.URL+"/quality/assets/echarts.min.js")
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != "b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0" {
		t.Fatal("echarts.min.js is not the vendored 6.1.0 file (see assets/README.md)")
	}
	etag := resp.Header.Get("ETag")
	if r, _ := get(t, srv.URL+"/quality/assets/echarts.min.js", "If-None-Match", etag); r.StatusCode != 304 {
		t.Fatalf("revalidation: %d", r.StatusCode)
	}
	zr, zb := get(t, srv.URL+"/quality/assets/echarts.min.js", "Accept-Encoding", "br, gzip")
	if zr.Header.Get("Content-Encoding") != "gzip" || len(zb) >= len(b)/2 || zr.Header.Get("ETag") == etag {
		t.Fatalf("gzip: %q, %d bytes of %d, etag %s", zr.Header.Get("Content-Encoding"), len(zb), len(b), zr.Header.Get("ETag"))
	}
	gr, err := gzip.NewReader(bytes.NewReader(zb))
	if err != nil {
		t.Fatal(err)
	}
	if plain, _ := io.ReadAll(gr); !bytes.Equal(plain, b) {
		t.Fatal("gzipped body differs")
	}
	if r, _ := get(t, srv.URL+"/quality/assets/echarts.min.js", "Accept-Encoding", "gzip;q=0"); r.Header.Get("Content-Encoding") != "" {
		t.Fatal("gzip;q=0 got gzip")
	}
	for _, p := range []string{"/quality/assets/", "/quality/assets/nope.js", "/quality/assets/../page.go"} {
		if r, _ := get(t, srv.URL+p); r.StatusCode == 200 {
			t.Errorf("%s served", p)
		}
	}
	// The page: no script inline (the policy forbids it), assets local.
	resp, b = get(t, srv.URL+"/quality", "Accept-Language", "ko-KR,ko;q=0.9,en;q=0.8")
	page := string(b)
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") ||
		!strings.Contains(page, `<html lang="ko">`) || !strings.Contains(page, `data-lang="ko"`) ||
		!strings.Contains(page, `src="/quality/assets/echarts.min.js"`) {
		t.Fatalf("page: %s", page)
	}
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]`).MatchString(page) || strings.Contains(page, "https://") || strings.Contains(page, "http://") {
		t.Fatal("inline script or a remote resource in the page")
	}
	// Tag keys reach the page as JSON, escaped for the attribute; the bad
	// key is dropped.
	if !strings.Contains(page, `data-tag-keys="[&#34;plan&#34;,&#34;device&#34;]"`) {
		t.Fatalf("tag keys: %s", page)
	}
	if !strings.Contains(page, `data-worst="/api/quality/worst"`) || !strings.Contains(page, `data-min-calls="30"`) {
		t.Fatal("operator page attributes")
	}
}

func TestPreferredLang(t *testing.T) {
	for _, tt := range []struct{ header, want string }{
		{"", ""},
		{"ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"},
		{"en-US,en;q=0.9,ko;q=0.8", "en"},
		{"ja,ko;q=0.5", "ko"},
		{"ja, fr;q=0.5", ""},
		{"en;q=0.2, ko;q=0.4", "ko"},
		{"ko;q=0, en", "en"},
		{"KO", "ko"},
		{"ko;q=x", ""},
	} {
		if got := PreferredLang(tt.header); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.header, got, tt.want)
		}
	}
}

// TestPageScript: every element the script looks up is on the page, and
// every text of the page has a Korean translation.
func TestPageScript(t *testing.T) {
	js, err := os.ReadFile("assets/quality.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`getElementById\('([^']+)'\)|querySelector\('#([^ ']+)`).FindAllStringSubmatch(string(js), -1) {
		id := m[1] + m[2]
		if !strings.Contains(pageHTML, `id="`+id+`"`) {
			t.Errorf("the script wants #%s, the page has none", id)
		}
	}
	ko := string(js[strings.Index(string(js), "ko: {"):])
	for _, m := range regexp.MustCompile(`data-i18n="([^"]+)"`).FindAllStringSubmatch(pageHTML, -1) {
		if !strings.Contains(ko, "'"+m[1]+"':") {
			t.Errorf("no Korean text for %s", m[1])
		}
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
