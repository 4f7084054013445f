package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sori-voice/sori/cmd/sori-demo/phone"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
)

// The loss weather map end to end: phones on three carriers call each
// other through real sori and sori-anchor processes with scripted losses
// per hop (cmd/sori-demo/phone), and the map, its API, its page in a real
// browser and the metrics must show what was sent, with the statistics a
// hand computation from the call records gives.

// qualityProfile is where a test phone is: its network and access type as
// sori must classify them, and how its access network treats its media.
type qualityProfile struct {
	key             string // user name prefix
	network, access string
	subnet          byte // its phones are on 127.0.SUBNET.x
	host            byte // x starts here
	leg             phone.Leg
	// nominal loss % of each hop, for the tolerance checks
	upLoss, downLoss float64
}

var (
	// carrier-a: clean both ways, LTE.
	qpA = qualityProfile{key: "qa", network: "carrier-a", access: "lte", subnet: 1, host: 10,
		leg: phone.Leg{PANI: "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=450050001a2b3c", UpJitter: 6 * time.Millisecond, DownJitter: 8 * time.Millisecond}}
	// carrier-b: LTE, 3 % lost on the downlink only (the phone reports it).
	qpB = qualityProfile{key: "qb", network: "carrier-b", access: "lte", subnet: 2, host: 10, downLoss: 3,
		leg: phone.Leg{PANI: "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=450080002b3c4d", DownLoss: 0.03, UpJitter: 6 * time.Millisecond, DownJitter: 10 * time.Millisecond}}
	// carrier-c on LTE: 5 % lost on the uplink.
	qpCL = qualityProfile{key: "qcl", network: "carrier-c", access: "lte", subnet: 3, host: 10, upLoss: 5,
		leg: phone.Leg{PANI: "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=450060003c4d5e", UpLoss: 0.05, UpJitter: 12 * time.Millisecond, DownJitter: 8 * time.Millisecond}}
	// carrier-c on Wi-Fi: clean. The PANI names no PLMN: sori finds the
	// network by the address its media comes from (127.0.3.0/24).
	qpCW = qualityProfile{key: "qcw", network: "carrier-c", access: "wifi", subnet: 3, host: 100,
		leg: phone.Leg{PANI: "IEEE-802.11; i-wlan-node-id=ffeeddccbbaa", UpJitter: 6 * time.Millisecond, DownJitter: 8 * time.Millisecond}}
)

const qualityNetworks = `networks:
  - {name: carrier-a, plmns: ["45005"], prefixes: ["127.0.1.0/24"]}
  - {name: carrier-b, plmns: ["45008"], prefixes: ["127.0.2.0/24"]}
  - {name: carrier-c, plmns: ["45006"], prefixes: ["127.0.3.0/24"]}
`

// qualityPair is one kind of call: a phone of from calls one of to.
type qualityPair struct{ from, to qualityProfile }

// qualityUser is a configured user of a test phone.
type qualityUser struct {
	name, plan string
	prof       qualityProfile
	addr       netip.Addr
}

// qualityUsers makes per phones of each pair's two profiles, in order:
// pair p, worker w has callers[p][w] and callees[p][w].
func qualityUsers(pairs []qualityPair, per int, tag string) (callers, callees [][]qualityUser, all []qualityUser) {
	count := map[string]int{}
	mk := func(p qualityProfile) qualityUser {
		i := count[p.key]
		count[p.key]++
		plan := "unlimited"
		if i%2 == 0 {
			plan = "lte-62"
		}
		u := qualityUser{name: fmt.Sprintf("%s%s-%d", p.key, tag, i), plan: plan, prof: p,
			addr: netip.AddrFrom4([4]byte{127, 0, p.subnet, p.host + byte(i)})}
		all = append(all, u)
		return u
	}
	for _, pr := range pairs {
		var cs, ds []qualityUser
		for range per {
			cs = append(cs, mk(pr.from))
			ds = append(ds, mk(pr.to))
		}
		callers, callees = append(callers, cs), append(callees, ds)
	}
	return callers, callees, all
}

func qualityUsersYAML(users []qualityUser) string {
	var b strings.Builder
	b.WriteString("users:\n")
	for _, u := range users {
		fmt.Fprintf(&b, "  - {name: %s, password: pw-%s, tags: {plan: %s}}\n", u.name, u.name, u.plan)
	}
	return b.String()
}

// qualityCall is one call made and what its phones did.
type qualityCall struct {
	from, to qualityUser
	res      phone.Result
}

// runQualityCalls registers the phones on n and has each worker (pair p,
// worker w) make calls calls in a row, all workers at once. Seeds follow
// from (p, w, call, seedBase), so every run drops the same packets.
func runQualityCalls(t *testing.T, n *node, pairs []qualityPair, callers, callees [][]qualityUser, calls, packets int, seedBase uint64) []qualityCall {
	t.Helper()
	server := netip.MustParseAddrPort(n.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func(u qualityUser) *phone.Phone {
		p, err := phone.New(phone.Config{Server: server, Domain: "sori.test", User: u.name, Password: "pw-" + u.name, Addr: u.addr})
		if err != nil {
			t.Fatalf("phone %s on %s: %v", u.name, u.addr, err)
		}
		t.Cleanup(p.Close)
		if err := p.Register(ctx, time.Hour); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var (
		mu   sync.Mutex
		out  []qualityCall
		errs []error
		wg   sync.WaitGroup
	)
	for pi := range pairs {
		for w := range callers[pi] {
			from, to := callers[pi][w], callees[pi][w]
			a, b := open(from), open(to)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := range calls {
					seed := seedBase + uint64(pi)*1000 + uint64(w)*100 + uint64(c)*2
					spec := phone.Spec{Caller: from.prof.leg, Callee: to.prof.leg, Packets: packets, CalleeHangsUp: c%2 == 1}
					spec.Caller.Seed, spec.Callee.Seed = seed, seed+1
					res, err := phone.Call(ctx, a, b, spec)
					mu.Lock()
					if err != nil {
						errs = append(errs, fmt.Errorf("%s → %s call %d: %w", from.name, to.name, c, err))
					} else {
						out = append(out, qualityCall{from: from, to: to, res: res})
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return out
}

// qualityCounts is a hand computation of one cell from call records, by
// the rules README's "Call quality map" gives.
type qualityCounts struct {
	calls, expected, lost, over1, over5 int64
	mos                                 []float64
}

type cellKey struct{ network, access, hop, plan string }

// handCells folds records into cells keyed by network, access, hop, and
// plan when byPlan (else plan is "").
func handCells(recs []calls.Record, byPlan bool) map[cellKey]*qualityCounts {
	out := map[cellKey]*qualityCounts{}
	get := func(k cellKey) *qualityCounts {
		if out[k] == nil {
			out[k] = &qualityCounts{}
		}
		return out[k]
	}
	count := func(c *qualityCounts, expected, lost int64, pct float64) {
		c.calls++
		c.expected += expected
		c.lost += lost
		if pct > 1 {
			c.over1++
		}
		if pct > 5 {
			c.over5++
		}
	}
	for _, r := range recs {
		for _, s := range [][2]*calls.MediaQuality{{r.CallerMedia, r.CalleeMedia}, {r.CalleeMedia, r.CallerMedia}} {
			self, other := s[0], s[1]
			if self == nil {
				continue
			}
			k := cellKey{network: self.Network, access: self.Access}
			if byPlan {
				k.plan = self.Tags["plan"]
			}
			if self.Sent > 0 {
				k.hop = "uplink"
				c := get(k)
				count(c, self.Sent, self.Lost, self.LossPct)
				c.mos = append(c.mos, self.MOS)
			}
			// The downlink: packets expected are what the anchor relayed
			// (the other side's sent less its lost), lost that times the
			// phone's reported share; only phones that sent RTCP.
			if self.DownLossPct > 0 || self.DownJitterMS > 0 || self.RTTMS > 0 {
				k.hop = "downlink"
				exp := other.Sent - other.Lost
				count(get(k), exp, int64(math.Round(float64(exp)*self.DownLossPct/100)), self.DownLossPct)
			}
		}
	}
	return out
}

// wilsonByHand is the Wilson score interval at 95 %, from its definition.
func wilsonByHand(k, n int64) (lo, hi float64) {
	const z = 1.959963984540054 // Φ⁻¹(0.975)
	if n == 0 {
		return 0, 1
	}
	p, nf := float64(k)/float64(n), float64(n)
	centre := (p + z*z/(2*nf)) / (1 + z*z/nf)
	half := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf)) / (1 + z*z/nf)
	return math.Max(0, centre-half), math.Min(1, centre+half)
}

// meanCIByHand is the mean of xs and mean ± 1.96 s/√n.
func meanCIByHand(xs []float64) (mean, lo, hi float64) {
	const z = 1.959963984540054
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	s := math.Sqrt(ss / float64(len(xs)-1))
	return mean, mean - z*s/math.Sqrt(float64(len(xs))), mean + z*s/math.Sqrt(float64(len(xs)))
}

// apiRow is a row of /api/quality.
type apiRow struct {
	Dims     map[string]string `json:"dims"`
	Calls    int64             `json:"calls"`
	Expected int64             `json:"expected"`
	Lost     int64             `json:"lost"`
	LossPct  *float64          `json:"loss_pct"`
	Over1    struct {
		Count         int64
		Share, Lo, Hi float64
	} `json:"over1"`
	Over5 struct {
		Count         int64
		Share, Lo, Hi float64
	} `json:"over5"`
	P90 float64 `json:"p90_loss_pct"`
	MOS *struct {
		N    int64    `json:"n"`
		Mean float64  `json:"mean"`
		Lo   *float64 `json:"lo"`
		Hi   *float64 `json:"hi"`
	} `json:"mos"`
	Enough bool `json:"enough"`
}

func qualityAPI(t *testing.T, base, query string) []apiRow {
	t.Helper()
	code, body := httpGet(t, base+query)
	var r struct {
		Rows []apiRow `json:"rows"`
	}
	if err := json.Unmarshal([]byte(body), &r); code != 200 || err != nil {
		t.Fatalf("%s: %d %v\n%s", query, code, err, body)
	}
	return r.Rows
}

// near: a figure the API rounded to places decimals is want.
func near(got, want float64, places int) bool {
	return math.Abs(got-want) <= 0.5*math.Pow10(-places)+1e-9
}

// checkRowAgainstHand compares one API row with the hand computation.
func checkRowAgainstHand(t *testing.T, what string, row apiRow, h *qualityCounts, minCalls int) {
	t.Helper()
	if row.Calls != h.calls || row.Expected != h.expected || row.Lost != h.lost {
		t.Errorf("%s: calls/expected/lost %d/%d/%d, by hand %d/%d/%d", what, row.Calls, row.Expected, row.Lost, h.calls, h.expected, h.lost)
	}
	if h.expected > 0 && (row.LossPct == nil || !near(*row.LossPct, 100*float64(h.lost)/float64(h.expected), 3)) {
		t.Errorf("%s: loss_pct %v, by hand %.4f", what, row.LossPct, 100*float64(h.lost)/float64(h.expected))
	}
	for _, s := range []struct {
		name          string
		count, k      int64
		share, lo, hi float64
	}{{"over1", row.Over1.Count, h.over1, row.Over1.Share, row.Over1.Lo, row.Over1.Hi}, {"over5", row.Over5.Count, h.over5, row.Over5.Share, row.Over5.Lo, row.Over5.Hi}} {
		lo, hi := wilsonByHand(s.k, h.calls)
		if s.count != s.k || !near(s.share, float64(s.k)/float64(h.calls), 4) || !near(s.lo, lo, 4) || !near(s.hi, hi, 4) {
			t.Errorf("%s: %s %d %.4f [%.4f, %.4f], by hand %d %.4f [%.4f, %.4f]", what, s.name, s.count, s.share, s.lo, s.hi, s.k, float64(s.k)/float64(h.calls), lo, hi)
		}
	}
	if len(h.mos) == 0 {
		if row.MOS != nil {
			t.Errorf("%s: a MOS on a hop without one: %+v", what, *row.MOS)
		}
	} else {
		mean, lo, hi := meanCIByHand(h.mos)
		if row.MOS == nil || row.MOS.N != int64(len(h.mos)) || !near(row.MOS.Mean, mean, 3) || row.MOS.Lo == nil || row.MOS.Hi == nil ||
			!near(*row.MOS.Lo, lo, 3) || !near(*row.MOS.Hi, hi, 3) {
			t.Errorf("%s: MOS %+v, by hand n=%d %.4f [%.4f, %.4f]", what, row.MOS, len(h.mos), mean, lo, hi)
		}
	}
	if row.Enough != (row.Calls >= int64(minCalls)) {
		t.Errorf("%s: enough %v with %d calls (min %d)", what, row.Enough, row.Calls, minCalls)
	}
}

func qualityNode(t *testing.T, an *anchorProc, store, cdr string, users []qualityUser, minCalls int) *node {
	t.Helper()
	return qualityNodeFlushing(t, an, store, cdr, users, minCalls, "200ms")
}

// qualityNodeFlushing is qualityNode with its quality.flush_every.
func qualityNodeFlushing(t *testing.T, an *anchorProc, store, cdr string, users []qualityUser, minCalls int, flushEvery string) *node {
	t.Helper()
	return startNode(t, nodeConfig{store: store, extra: fmt.Sprintf("media:\n  anchors: [%q]\ncdr:\n  file: %s\nquality:\n  min_calls: %d\n  public: true\n  flush_every: %s\n", an.ng, cdr, minCalls, flushEvery) +
		qualityNetworks + qualityUsersYAML(users)})
}

// A known set of calls on three carriers: the map has each network's
// loss per hop and access type as scripted, with sample sizes and
// intervals equal to a hand computation from the records; the page in
// Chromium shows the same; the public view names no call and no user.
func TestQualityMapFigures(t *testing.T) {
	t.Parallel()
	// No jitter buffer: what a phone leaves out or drops is the only loss,
	// however loaded the machine (a late packet would be discarded).
	an := startAnchor(t, "-jitter-buffer", "off", "-rtcp-interval", "1s")
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	pairs := []qualityPair{{qpA, qpB}, {qpB, qpCL}, {qpCL, qpCW}, {qpCW, qpA}}
	const workers, perWorker, packets, minCalls = 4, 3, 75, 20
	callers, callees, users := qualityUsers(pairs, workers, "")
	n := qualityNode(t, an, "memory", cdr, users, minCalls)

	made := runQualityCalls(t, n, pairs, callers, callees, perWorker, packets, 1)
	total := len(pairs) * workers * perWorker
	recs := waitRecords(t, cdr, total, "the quality calls", func(r calls.Record) bool { return r.Disposition == calls.Answered })
	byID := map[string]calls.Record{}
	for _, r := range recs {
		byID[r.CallID] = r
	}

	// Each record is what its phones did: the anchor counted every packet
	// numbered, lost exactly those a phone left out, and each phone's
	// downlink share is what it dropped.
	sides := 2 * workers * perWorker // call sides per profile: each is in two pairs
	for _, c := range made {
		r, ok := byID[c.res.CallID]
		if !ok {
			t.Fatalf("no record of call %s", c.res.CallID)
		}
		for _, s := range []struct {
			who  string
			u    qualityUser
			q    *calls.MediaQuality
			side phone.Side
		}{{"caller", c.from, r.CallerMedia, c.res.Caller}, {"callee", c.to, r.CalleeMedia, c.res.Callee}} {
			q := s.q
			if q == nil {
				t.Fatalf("call %s: no %s media in the record", r.CallID, s.who)
			}
			if q.Network != s.u.prof.network || q.Access != s.u.prof.access || q.Tags["plan"] != s.u.plan {
				t.Errorf("call %s %s %s: network %q access %q tags %v, want %s %s plan=%s", r.CallID, s.who, s.u.name, q.Network, q.Access, q.Tags, s.u.prof.network, s.u.prof.access, s.u.plan)
			}
			if q.Sent != int64(s.side.Sent) || q.Lost != int64(s.side.UpDropped) {
				t.Errorf("call %s %s %s: the anchor counted %d sent, %d lost; the phone numbered %d and left out %d", r.CallID, s.who, s.u.name, q.Sent, q.Lost, s.side.Sent, s.side.UpDropped)
			}
			if want := math.Round(10000*float64(s.side.DownDropped)/float64(packets)) / 100; q.DownLossPct != want {
				t.Errorf("call %s %s %s: down_loss_pct %.2f, the phone dropped %d of %d (%.2f %%)", r.CallID, s.who, s.u.name, q.DownLossPct, s.side.DownDropped, packets, want)
			}
			if q.DownJitterMS <= 0 || s.side.Reports < 2 {
				t.Errorf("call %s %s: down_jitter_ms %d after %d reports", r.CallID, s.who, q.DownJitterMS, s.side.Reports)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	base := "http://" + n.http
	hand := handCells(recs, false)
	rows := qualityAPI(t, base, "/api/quality?from=-2h&to=now&by=network,hop,access")
	profiles := []qualityProfile{qpA, qpB, qpCL, qpCW}
	if len(rows) != 2*len(profiles) {
		t.Errorf("%d rows by network, hop and access, want %d: %+v", len(rows), 2*len(profiles), rows)
	}
	for _, p := range profiles {
		for _, hop := range []string{"uplink", "downlink"} {
			what := p.network + "/" + p.access + "/" + hop
			var row *apiRow
			for i := range rows {
				if rows[i].Dims["network"] == p.network && rows[i].Dims["access"] == p.access && rows[i].Dims["hop"] == hop {
					row = &rows[i]
				}
			}
			if row == nil {
				t.Errorf("no row %s", what)
				continue
			}
			h := hand[cellKey{network: p.network, access: p.access, hop: hop}]
			if h == nil || h.calls != int64(sides) {
				t.Errorf("%s: the records have %+v call sides, want %d", what, h, sides)
				continue
			}
			checkRowAgainstHand(t, what, *row, h, minCalls)
			nominal := p.upLoss
			if hop == "downlink" {
				nominal = p.downLoss
			}
			// 24 sides of 75 packets: a binomial's spread at 5 % is 0.5 points.
			if row.LossPct == nil || math.Abs(*row.LossPct-nominal) > 2 || (nominal == 0 && *row.LossPct != 0) {
				t.Errorf("%s: loss %v %%, scripted %.0f %%", what, row.LossPct, nominal)
			}
			t.Logf("%-28s calls %d, lost %d of %d (%.3f %%), over 1 %% %.3f [%.3f, %.3f], p90 %.2f %%, MOS %v",
				what, row.Calls, row.Lost, row.Expected, *row.LossPct, row.Over1.Share, row.Over1.Lo, row.Over1.Hi, row.P90, mosString(row))
		}
	}

	// The plan cut: each network's sides by their user's plan.
	handPlan := handCells(recs, true)
	planRows := qualityAPI(t, base, "/api/quality?from=-2h&by=network,tag:plan,hop,access")
	if len(planRows) != 2*2*len(profiles) {
		t.Errorf("%d rows by plan, want %d", len(planRows), 2*2*len(profiles))
	}
	for _, row := range planRows {
		k := cellKey{network: row.Dims["network"], access: row.Dims["access"], hop: row.Dims["hop"], plan: row.Dims["tag:plan"]}
		h := handPlan[k]
		if h == nil {
			t.Errorf("row %v is not in the records", row.Dims)
			continue
		}
		checkRowAgainstHand(t, fmt.Sprintf("%+v", k), row, h, minCalls)
	}

	// The same counts in the Prometheus histograms, with access and hop.
	_, metrics := httpGet(t, base+"/metrics")
	for _, p := range profiles {
		for _, hop := range []string{"uplink", "downlink"} {
			want := fmt.Sprintf(`sori_media_loss_ratio_count{access=%q,hop=%q,network=%q} %d`, p.access, hop, p.network, sides)
			if !strings.Contains(metrics, want+"\n") {
				t.Errorf("metrics lack %s", want)
			}
		}
		if want := fmt.Sprintf(`sori_media_mos_count{access=%q,hop="uplink",network=%q} %d`, p.access, p.network, sides); !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	var callIDs []string
	for _, r := range recs {
		callIDs = append(callIDs, r.CallID)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.name)
	}
	t.Run("page in Chromium", func(t *testing.T) { checkQualityPage(t, base, callIDs, names) })
}

func mosString(r *apiRow) string {
	if r.MOS == nil {
		return "none"
	}
	if r.MOS.Lo == nil {
		return fmt.Sprintf("%.3f", r.MOS.Mean)
	}
	return fmt.Sprintf("%.3f [%.3f, %.3f]", r.MOS.Mean, *r.MOS.Lo, *r.MOS.Hi)
}

// checkQualityPage loads /quality and /quality/public from base in
// headless Chromium: the operator page's table shows the API's networks
// and figures, its worst calls list Call-IDs; neither page logs an error;
// the public page and its API show none of callIDs and names.
func checkQualityPage(t *testing.T, base string, callIDs, names []string) {
	b := startChromium(t)
	want := qualityAPI(t, base, "/api/quality?from=-24h&to=now&by=network,hop")

	page := b.open(t, base+"/quality")
	page.waitFor(t, fmt.Sprintf("document.querySelectorAll('#summary tbody tr').length === %d && document.querySelectorAll('#worst tbody tr').length > 0", len(want)))
	var table [][]string
	page.eval(t, `Array.from(document.querySelectorAll('#summary tbody tr')).map(tr => Array.from(tr.cells).map(td => td.textContent))`, &table)
	hopLabel := map[string]string{"uplink": "Uplink", "downlink": "Downlink"}
	num := regexp.MustCompile(`[0-9]+(\.[0-9]+)?`)
	for i, w := range want {
		if i >= len(table) || len(table[i]) < 10 {
			t.Fatalf("the page's table %v, want the API's %d rows", table, len(want))
		}
		cells := table[i]
		if cells[0] != w.Dims["network"] || cells[1] != hopLabel[w.Dims["hop"]] || cells[2] != strconv.FormatInt(w.Calls, 10) {
			t.Errorf("row %d on the page %q, API %v calls %d", i, cells, w.Dims, w.Calls)
		}
		// Loss (3 decimals), over 1 % with its interval (1 decimal, %), MOS.
		figures := func(s string) []float64 {
			var out []float64
			for _, m := range num.FindAllString(s, -1) {
				v, _ := strconv.ParseFloat(m, 64)
				out = append(out, v)
			}
			return out
		}
		if got := figures(cells[3]); len(got) != 1 || !near(got[0], *w.LossPct, 3) {
			t.Errorf("row %d: loss %q on the page, API %v", i, cells[3], *w.LossPct)
		}
		if got := figures(cells[4]); len(got) != 3 || !near(got[0], 100*w.Over1.Share, 1) || !near(got[1], 100*w.Over1.Lo, 1) || !near(got[2], 100*w.Over1.Hi, 1) {
			t.Errorf("row %d: over 1 %% %q on the page, API %+v", i, cells[4], w.Over1)
		}
		if w.MOS != nil {
			if got := figures(cells[8]); len(got) != 3 || !near(got[0], w.MOS.Mean, 2) || !near(got[1], *w.MOS.Lo, 2) || !near(got[2], *w.MOS.Hi, 2) {
				t.Errorf("row %d: MOS %q on the page, API %+v", i, cells[8], *w.MOS)
			}
		} else if cells[8] != "–" {
			t.Errorf("row %d: MOS %q on a downlink", i, cells[8])
		}
	}
	var heat struct {
		Charts   int      `json:"charts"`
		Headings []string `json:"headings"`
		Status   string   `json:"status"`
		Worst    []string `json:"worst"`
	}
	page.eval(t, `({charts: document.querySelectorAll('#heat canvas, #trend canvas').length,
		headings: Array.from(document.querySelectorAll('#heat h3')).map(h => h.textContent),
		status: document.getElementById('status').textContent,
		worst: Array.from(document.querySelectorAll('#worst td.callid')).map(td => td.textContent)})`, &heat)
	if heat.Charts < 3 || !slices.Equal(heat.Headings, []string{"Uplink (phone → anchor)", "Downlink (anchor → phone)"}) || strings.Contains(heat.Status, "Could not") {
		t.Errorf("the heat maps: %+v", heat)
	}
	for _, id := range heat.Worst {
		if !slices.Contains(callIDs, id) {
			t.Errorf("a worst call %q is none of the test's", id)
		}
	}
	if len(heat.Worst) == 0 {
		t.Error("the operator page lists no worst call")
	}
	shot := filepath.Join(os.TempDir(), "sori-quality-screenshot.png")
	page.screenshot(t, shot)
	t.Logf("screenshot of /quality: %s", shot)
	page.checkNoErrors(t)

	pub := b.open(t, base+"/quality/public")
	pub.waitFor(t, fmt.Sprintf("document.querySelectorAll('#summary tbody tr').length === %d", len(want)))
	var dom string
	pub.eval(t, `document.documentElement.outerHTML`, &dom)
	publicShot := filepath.Join(os.TempDir(), "sori-quality-public-screenshot.png")
	pub.screenshot(t, publicShot)
	t.Logf("screenshot of /quality/public: %s", publicShot)
	pub.checkNoErrors(t)
	texts := map[string]string{"the public page's DOM": dom}
	for _, q := range []string{"", "?by=network,hop,access", "?by=network,tag:plan", "?by=network,hour,hop&metric=mos"} {
		_, body := httpGet(t, base+"/api/quality/public"+q)
		texts["/api/quality/public"+q] = body
	}
	if code, _ := httpGet(t, base+"/api/quality/worst"); code != 200 {
		t.Errorf("the operator's worst calls: %d", code)
	}
	for what, text := range texts {
		for _, id := range callIDs {
			if strings.Contains(text, id) || strings.Contains(text, strings.SplitN(id, "@", 2)[0]) {
				t.Errorf("%s has the Call-ID %s", what, id)
			}
		}
		for _, name := range names {
			if strings.Contains(text, name) {
				t.Errorf("%s has the user name %s", what, name)
			}
		}
	}
	if !strings.Contains(dom, "carrier-c") {
		t.Error("the public page shows no network")
	}
}

// Two sori nodes on one Redis add to the same hours: calls through either
// are in both nodes' answers. Node 1 flushes every 200 ms, node 2 only when
// it stops: node 1 has node 2's calls once node 2 got SIGTERM.
func TestQualityMapTwoNodesShareRedis(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	an := startAnchor(t, "-jitter-buffer", "off", "-rtcp-interval", "1s")
	pairs := []qualityPair{{qpA, qpCL}}
	const workers, perWorker, packets = 3, 2, 50
	c1, d1, u1 := qualityUsers(pairs, workers, "n1")
	c2, d2, u2 := qualityUsers(pairs, workers, "n2")
	users := append(append([]qualityUser{}, u1...), u2...)
	// The second node's phones on other addresses of the same subnets.
	for _, l := range [][]qualityUser{c2[0], d2[0]} {
		for i := range l {
			a := l[i].addr.As4()
			a[3] += 50
			l[i].addr = netip.AddrFrom4(a)
		}
	}
	cdr1, cdr2 := filepath.Join(t.TempDir(), "cdr1.jsonl"), filepath.Join(t.TempDir(), "cdr2.jsonl")
	n1 := qualityNode(t, an, rs.URL(), cdr1, users, 10)
	n2 := qualityNodeFlushing(t, an, rs.URL(), cdr2, users, 10, "10m")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); runQualityCalls(t, n1, pairs, c1, d1, perWorker, packets, 500) }()
	go func() { defer wg.Done(); runQualityCalls(t, n2, pairs, c2, d2, perWorker, packets, 900) }()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	per := workers * perWorker
	answered := func(r calls.Record) bool { return r.Disposition == calls.Answered }
	recs := append(waitRecords(t, cdr1, per, "node 1", answered), waitRecords(t, cdr2, per, "node 2", answered)...)
	hand := handCells(recs, false)

	// Each node counts its own calls at once, the other's once they are in
	// Redis: node 2 has node 1's after node 1's next flush, node 1 only its
	// own while node 2 runs.
	sum := func(rows []apiRow) (n int64) {
		for _, r := range rows {
			n += r.Calls
		}
		return n
	}
	var rows1, rows2 []apiRow
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		rows2 = qualityAPI(t, "http://"+n2.http, "/api/quality?from=-2h&by=network,hop,access")
		if sum(rows2) >= int64(4*2*per) || time.Now().After(deadline) {
			break
		}
	}
	if got := sum(qualityAPI(t, "http://"+n1.http, "/api/quality?from=-2h&by=network,hop,access")); got != int64(4*per) {
		t.Fatalf("node 1 has %d call sides before node 2 stopped, want its own %d", got, 4*per)
	}
	n2.stop() // SIGTERM: its last flush
	rows1 = qualityAPI(t, "http://"+n1.http, "/api/quality?from=-2h&by=network,hop,access")
	if len(rows1) != 4 {
		t.Fatalf("node 1 has %d rows, want 4 (2 networks × 2 hops): %+v", len(rows1), rows1)
	}
	j1, _ := json.Marshal(rows1)
	j2, _ := json.Marshal(rows2)
	if string(j1) != string(j2) {
		t.Errorf("the nodes answer differently:\n%s\n%s", j1, j2)
	}
	for _, row := range rows1 {
		k := cellKey{network: row.Dims["network"], access: row.Dims["access"], hop: row.Dims["hop"]}
		h := hand[k]
		if h == nil || h.calls != int64(2*per) {
			t.Errorf("%+v: by hand %+v, want %d call sides (both nodes')", k, h, 2*per)
			continue
		}
		checkRowAgainstHand(t, fmt.Sprintf("%+v", k), row, h, 10)
	}
}

// chromium is a headless Chromium driven over the DevTools protocol.
type chromium struct {
	port string
}

// startChromium starts /usr/bin/chromium (make test installs it) with a
// fresh profile and the extra flags; it is killed when the test ends.
func startChromium(t *testing.T, extra ...string) *chromium {
	t.Helper()
	const bin = "/usr/bin/chromium"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing (make test installs chromium): %v", bin, err)
	}
	// Not t.TempDir: the browser's helper processes may still write to the
	// profile for a moment after it is killed.
	profile, err := os.MkdirTemp("", "sori-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions", "--mute-audio",
		"--user-data-dir=" + profile, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--window-size=1280,1000", "--lang=en-US"}, extra...)
	cmd := exec.Command(bin, append(args, "about:blank")...)
	// Its own process group, so that its helpers go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		for range 20 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	found := make(chan string, 1)
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		buf := make([]byte, 4096)
		sent := false
		for {
			n, err := stderr.Read(buf)
			logMu.Lock()
			log.Write(buf[:n])
			s := log.String()
			logMu.Unlock()
			if m := regexp.MustCompile(`DevTools listening on ws://127\.0\.0\.1:([0-9]+)/`).FindStringSubmatch(s); m != nil && !sent {
				found <- m[1]
				sent = true
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case port := <-found:
		return &chromium{port: port}
	case <-time.After(30 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("chromium did not start:\n%s", log.String())
	}
	return nil
}

// cdpPage is one tab, connected.
type cdpPage struct {
	conn *websocket.Conn
	ctx  context.Context

	mu      sync.Mutex
	next    int64
	pending map[int64]chan cdpMessage
	errors  []string // console errors, exceptions, failed loads
}

type cdpMessage struct {
	ID     int64           `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// open makes a new tab and loads u in it.
func (b *chromium) open(t *testing.T, u string) *cdpPage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	req, _ := url.Parse("http://127.0.0.1:" + b.port + "/json/new?about:blank")
	code, body := httpPut(t, req.String())
	var target struct {
		WS string `json:"webSocketDebuggerUrl"`
	}
	if err := json.Unmarshal([]byte(body), &target); code != 200 || err != nil || target.WS == "" {
		t.Fatalf("a new tab: %d %v %s", code, err, body)
	}
	conn, _, err := websocket.Dial(ctx, target.WS, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(256 << 20) // screenshots
	t.Cleanup(func() { _ = conn.CloseNow() })
	p := &cdpPage{conn: conn, ctx: ctx, pending: map[int64]chan cdpMessage{}}
	go p.read()
	for _, m := range []string{"Runtime.enable", "Log.enable", "Page.enable"} {
		p.call(t, m, nil, nil)
	}
	p.call(t, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}, nil)
	p.call(t, "Page.navigate", map[string]any{"url": u}, nil)
	return p
}

func (p *cdpPage) read() {
	for {
		_, data, err := p.conn.Read(p.ctx)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if m.ID != 0 {
			p.mu.Lock()
			ch := p.pending[m.ID]
			delete(p.pending, m.ID)
			p.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		p.event(m)
	}
}

// event keeps what the page reports as an error.
func (p *cdpPage) event(m cdpMessage) {
	var e string
	switch m.Method {
	case "Runtime.consoleAPICalled":
		var v struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		_ = json.Unmarshal(m.Params, &v)
		if v.Type == "error" || v.Type == "assert" {
			e = "console." + v.Type + ":"
			for _, a := range v.Args {
				e += fmt.Sprintf(" %v%s", a.Value, a.Description)
			}
		}
	case "Runtime.exceptionThrown":
		e = "exception: " + string(m.Params)
	case "Log.entryAdded":
		var v struct {
			Entry struct {
				Level, Text, URL string
			} `json:"entry"`
		}
		_ = json.Unmarshal(m.Params, &v)
		// The browser's own request for /favicon.ico is not the page's.
		if v.Entry.Level == "error" && !strings.HasSuffix(v.Entry.URL, "/favicon.ico") {
			e = "log: " + v.Entry.Text + " " + v.Entry.URL
		}
	}
	if e != "" {
		p.mu.Lock()
		p.errors = append(p.errors, e)
		p.mu.Unlock()
	}
}

// call sends a command and decodes its result into out (when not nil).
func (p *cdpPage) call(t *testing.T, method string, params any, out any) {
	t.Helper()
	p.mu.Lock()
	p.next++
	id := p.next
	ch := make(chan cdpMessage, 1)
	p.pending[id] = ch
	p.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	b, _ := json.Marshal(msg)
	if err := p.conn.Write(p.ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			t.Fatalf("%s: %s", method, m.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(m.Result, out); err != nil {
				t.Fatalf("%s: %v", method, err)
			}
		}
	case <-p.ctx.Done():
		t.Fatalf("%s: no answer", method)
	}
}

// eval evaluates a JavaScript expression and decodes its value into out.
func (p *cdpPage) eval(t *testing.T, expr string, out any) {
	t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	p.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.Exception != nil {
		t.Fatalf("%s: %s", expr, r.Exception.Text)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result.Value, out); err != nil {
			t.Fatalf("%s: %v (%s)", expr, err, r.Result.Value)
		}
	}
}

// waitFor polls a JavaScript condition until it holds (20 s at most).
func (p *cdpPage) waitFor(t *testing.T, cond string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok bool
		p.eval(t, "!!(document.readyState === 'complete' && ("+cond+"))", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var text string
			p.eval(t, "document.body ? document.body.innerText : ''", &text)
			p.mu.Lock()
			errs := p.errors
			p.mu.Unlock()
			t.Fatalf("the page never had %s; errors %q; it shows:\n%s", cond, errs, tail(text, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot writes the whole page as a PNG.
func (p *cdpPage) screenshot(t *testing.T, path string) {
	t.Helper()
	var h float64
	p.eval(t, "document.documentElement.scrollHeight", &h)
	p.call(t, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": int(h), "deviceScaleFactor": 1, "mobile": false}, nil)
	time.Sleep(300 * time.Millisecond) // the charts redraw for the new size
	var shot struct {
		Data string `json:"data"`
	}
	p.call(t, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil || len(png) < 1000 {
		t.Fatalf("screenshot: %v (%d bytes)", err, len(png))
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (p *cdpPage) checkNoErrors(t *testing.T) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // the last events
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errors {
		t.Errorf("the page logged an error: %s", e)
	}
}

func httpPut(t *testing.T, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
