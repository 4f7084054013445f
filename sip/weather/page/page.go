// Package page serves the loss weather map: the JSON API over a
// weather.Aggregator, the operator's page (heat maps, trends, the worst
// recent calls) and, when enabled, a public page and API showing only the
// figures backed by enough calls. The page's script, styles and chart
// library are embedded: it works with no network.
package page

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sori-voice/sori/sip/weather"
	"github.com/sori-voice/sori/sip/weather/worst"
)

//go:embed assets
var assetFS embed.FS

//go:embed quality.html
var pageHTML string

var pageTmpl = template.Must(template.New("quality").Parse(pageHTML))

// Routes, as Register mounts them.
const (
	PathAPI       = "/api/quality"
	PathPublicAPI = "/api/quality/public"
	PathWorstAPI  = "/api/quality/worst"
	PathPage      = "/quality"
	PathPublic    = "/quality/public"
	PathAssets    = "/quality/assets/"
)

// Options configure the handlers.
type Options struct {
	Agg      weather.Aggregator
	Worst    *worst.List // nil: the operator page lists no calls
	MinCalls int         // quality.min_calls; 0 is weather.DefaultMinCalls
	Public   bool        // quality.public: serve the public page and API
	TagKeys  []string    // the tag keys of users[].tags, offered by the page
	// Timeout bounds one query (default 10 s).
	Timeout time.Duration
	Now     func() time.Time // default time.Now
	Log     *slog.Logger     // default slog.Default()
}

// Handlers serves the API and the pages.
type Handlers struct {
	o Options
}

// New returns the handlers.
func New(o Options) *Handlers {
	if o.MinCalls <= 0 {
		o.MinCalls = weather.DefaultMinCalls
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	var keys []string
	for _, k := range o.TagKeys {
		if weather.ValidTagKey(k) {
			keys = append(keys, k)
		}
	}
	o.TagKeys = keys
	return &Handlers{o: o}
}

// Register mounts every handler on mux at the paths above; the public
// ones only when Options.Public is set.
func (h *Handlers) Register(mux *http.ServeMux) {
	mux.Handle("GET "+PathAPI, h.API())
	mux.Handle("GET "+PathWorstAPI, h.WorstAPI())
	mux.Handle("GET "+PathPage, h.Page())
	mux.Handle("GET "+PathAssets, h.Assets())
	if h.o.Public {
		mux.Handle("GET "+PathPublicAPI, h.PublicAPI())
		mux.Handle("GET "+PathPublic, h.PublicPage())
	}
}

// RegisterPublic mounts only what the public may see, the public page,
// its API and the assets, for a listener of its own (whatever
// Options.Public says: mounting them is the choice).
func (h *Handlers) RegisterPublic(mux *http.ServeMux) {
	mux.Handle("GET "+PathPublicAPI, h.PublicAPI())
	mux.Handle("GET "+PathPublic, h.PublicPage())
	mux.Handle("GET "+PathAssets, h.Assets())
}

// API serves GET /api/quality?from=&to=&by=&metric=.
func (h *Handlers) API() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serveQuery(w, r, false) })
}

// PublicAPI serves GET /api/quality/public: the same query, only the rows
// with enough calls.
func (h *Handlers) PublicAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serveQuery(w, r, true) })
}

// Response is the JSON of the quality APIs.
type Response struct {
	From     time.Time     `json:"from"`
	To       time.Time     `json:"to"`
	By       []string      `json:"by"`
	Metric   string        `json:"metric"`
	MinCalls int           `json:"min_calls"`
	Public   bool          `json:"public"`
	Rows     []weather.Row `json:"rows"`
}

// errorBody is a 4xx/5xx answer.
type errorBody struct {
	Error string `json:"error"`
	Param string `json:"param,omitempty"`
}

var queryParams = map[string]bool{"from": true, "to": true, "by": true, "metric": true}

// ParseQuery reads a Query from URL parameters at now: from and to are RFC
// 3339 or relative to now ("-24h", "-90m", "-7d", "now"; from defaults to
// -24h, to to now), by is a comma-separated list (default network,hop),
// metric one of weather.Metrics. An error is a *weather.ParamError.
func ParseQuery(v map[string][]string, now time.Time, minCalls int) (weather.Query, error) {
	q := weather.Query{MinCalls: minCalls}
	for k, vals := range v {
		if !queryParams[k] {
			return q, &weather.ParamError{Param: k, Msg: "unknown parameter (from, to, by, metric)"}
		}
		if len(vals) > 1 {
			return q, &weather.ParamError{Param: k, Msg: "given more than once"}
		}
	}
	get := func(k string) string {
		if vals := v[k]; len(vals) > 0 {
			return strings.TrimSpace(vals[0])
		}
		return ""
	}
	var err error
	if q.From, err = weather.ParseTime(get("from"), now, -24*time.Hour); err != nil {
		return q, &weather.ParamError{Param: "from", Msg: err.Error()}
	}
	if q.To, err = weather.ParseTime(get("to"), now, 0); err != nil {
		return q, &weather.ParamError{Param: "to", Msg: err.Error()}
	}
	if q.By, err = weather.ParseBy(get("by")); err != nil {
		return q, &weather.ParamError{Param: "by", Msg: err.Error()}
	}
	q.Metric = get("metric")
	if q.Metric == "" {
		q.Metric = weather.MetricOver1
	}
	return q, q.Check()
}

func (h *Handlers) serveQuery(w http.ResponseWriter, r *http.Request, public bool) {
	q, err := ParseQuery(r.URL.Query(), h.o.Now(), h.o.MinCalls)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.Timeout)
	defer cancel()
	rows, err := h.o.Agg.Query(ctx, q)
	if err != nil {
		var pe *weather.ParamError
		if errors.As(err, &pe) {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		h.o.Log.Warn("quality query failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, errors.New("the quality data cannot be read now"))
		return
	}
	if public {
		kept := rows[:0]
		for _, row := range rows {
			if row.Enough {
				kept = append(kept, row)
			}
		}
		rows = kept
	}
	if rows == nil {
		rows = []weather.Row{}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, Response{From: q.From.UTC(), To: q.To.UTC(), By: q.By, Metric: q.Metric, MinCalls: q.MinCalls, Public: public, Rows: rows})
}

// WorstResponse is the JSON of /api/quality/worst.
type WorstResponse struct {
	Calls []worst.Call `json:"calls"`
}

// WorstAPI serves GET /api/quality/worst: the worst recent call sides of
// this node (each with the Call-ID and the path of its record).
func (h *Handlers) WorstAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.Query()) > 0 {
			for k := range r.URL.Query() {
				writeError(w, http.StatusBadRequest, &weather.ParamError{Param: k, Msg: "unknown parameter (none taken)"})
				return
			}
		}
		calls := []worst.Call{}
		if h.o.Worst != nil {
			calls = h.o.Worst.Worst()
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, WorstResponse{Calls: calls})
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, err error) {
	body := errorBody{Error: err.Error()}
	var pe *weather.ParamError
	if errors.As(err, &pe) {
		body.Param = pe.Param
	}
	writeJSON(w, code, body)
}

// pageData fills quality.html.
type pageData struct {
	Lang     string // from Accept-Language; "" when the request had none
	HTMLLang string // the <html lang>
	API      string
	WorstAPI string // "" on the public page
	Public   bool
	MinCalls int
	TagKeys  string // JSON list
	Assets   string
}

// Page serves the operator's page, /quality.
func (h *Handlers) Page() http.Handler { return h.page(false) }

// PublicPage serves /quality/public: no calls listed, only rows with
// enough calls.
func (h *Handlers) PublicPage() http.Handler { return h.page(true) }

// securityHeaders: the page loads its own script and styles only (the
// chart library sets inline styles on its elements).
const csp = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (h *Handlers) page(public bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys, _ := json.Marshal(append([]string{}, h.o.TagKeys...))
		d := pageData{API: PathAPI, WorstAPI: PathWorstAPI, Public: public, MinCalls: h.o.MinCalls, TagKeys: string(keys), Assets: strings.TrimSuffix(PathAssets, "/")}
		if public {
			d.API, d.WorstAPI = PathPublicAPI, ""
		}
		d.Lang = PreferredLang(r.Header.Get("Accept-Language"))
		d.HTMLLang = d.Lang
		if d.HTMLLang == "" {
			d.HTMLLang = "en"
		}
		var buf bytes.Buffer
		if err := pageTmpl.Execute(&buf, d); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Vary", "Accept-Language")
		_, _ = w.Write(buf.Bytes())
	})
}

// PreferredLang picks "ko" or "en" from an Accept-Language value by its
// weights; "" when it names neither.
func PreferredLang(header string) string {
	best, bestQ := "", -1.0
	for _, part := range strings.Split(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		tag = strings.ToLower(strings.TrimSpace(tag))
		primary, _, _ := strings.Cut(tag, "-")
		if primary != "ko" && primary != "en" {
			continue
		}
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		if q > bestQ && q > 0 {
			best, bestQ = primary, q
		}
	}
	return best
}

// asset is one embedded file, ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string
	gz    func() []byte // the body gzipped, made on first use
}

var assets = loadAssets()

// contentTypes are set explicitly: the license files have no extension,
// and a JavaScript file must not depend on the system's MIME tables.
var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".md":   "text/plain; charset=utf-8",
	".html": "text/html; charset=utf-8",
	"":      "text/plain; charset=utf-8",
}

func loadAssets() map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		name := strings.TrimPrefix(p, "assets/")
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok || strings.HasPrefix(name, "LICENSE") || strings.HasPrefix(name, "NOTICE") {
			ctype = contentTypes[""]
		}
		out[name] = asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, gz: sync.OnceValue(func() []byte {
			// Compressed once, when first asked for: echarts.min.js is about
			// 1.1 MB, 0.35 MB gzipped.
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			_, _ = zw.Write(b)
			_ = zw.Close()
			return buf.Bytes()
		})}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return out
}

// Assets serves the embedded files under /quality/assets/: the page's
// script and styles, echarts.min.js and the licenses.
func (h *Handlers) Assets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, PathAssets)
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache") // revalidated: a new binary may bring a new file
		h.Set("Vary", "Accept-Encoding")
		zip := len(a.body) > 1024 && acceptsGzip(r.Header.Get("Accept-Encoding"))
		etag := a.etag
		if zip {
			etag = strings.TrimSuffix(etag, `"`) + `-gz"` // another representation, another tag
		}
		h.Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		b := a.body
		if zip {
			b = a.gz()
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(b)
	})
}

// acceptsGzip reads an Accept-Encoding value: gzip listed and not q=0.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
			return !ok || (q != "0" && q != "0.0" && q != "0.00" && q != "0.000")
		}
	}
	return false
}
