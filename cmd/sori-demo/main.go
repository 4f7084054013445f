// Command sori-demo fills sori's call quality map with traffic of known
// quality, for make demo: it registers the phones of the users in sori's
// configuration and has them call each other for -duration, several calls
// at once, each 5-10 s of Opus-sized RTP at 50 packets/s each way with RTCP
// reports from both phones, through sori and its media anchor.
//
//	sori-demo [-config testdata/demo/sori.yaml] [-duration 3m] [-concurrency 16]
//
// Users belong to the carriers by the first letter of their name (a…, b…,
// c…: carrier-a, carrier-b, carrier-c in networks:); each carrier's phones
// use addresses of its first prefix (127.0.1.x …) and the PLMN of its
// first plmns entry in their P-Access-Network-Info. What each carrier's
// access network does (see carriers) is simulated by the phones:
//
//	carrier-a  clean both ways; LTE, and Wi-Fi for a third of the calls
//	carrier-b  3 % lost on the downlink only (anchor → phone): the phone drops
//	           them and says so in its RTCP receiver reports; LTE
//	carrier-c  5 % lost on the uplink (phone → anchor) on LTE; clean on Wi-Fi,
//	           half of its calls on each
//
// Losses do not depend on the users' plans (users[].tags), so the plan cut
// of the map shows the same loss for every plan of a carrier. At the end
// it prints what the phones did (the losses the map should show) and the
// page's address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sori-voice/sori/cmd/sori-demo/phone"
	"github.com/sori-voice/sori/config"
)

// carrier is what a carrier's access networks do to its phones' media.
type carrier struct {
	network   string  // the name in networks:
	letter    string  // its users' names start with it
	wifiShare float64 // share of its calls on Wi-Fi
	lte, wifi phone.Leg
}

var carriers = []carrier{
	{network: "carrier-a", letter: "a", wifiShare: 1.0 / 3,
		lte:  phone.Leg{UpJitter: 6 * time.Millisecond, DownJitter: 8 * time.Millisecond},
		wifi: phone.Leg{UpJitter: 5 * time.Millisecond, DownJitter: 6 * time.Millisecond}},
	{network: "carrier-b", letter: "b",
		lte: phone.Leg{DownLoss: 0.03, UpJitter: 8 * time.Millisecond, DownJitter: 12 * time.Millisecond}},
	{network: "carrier-c", letter: "c", wifiShare: 0.5,
		lte:  phone.Leg{UpLoss: 0.05, UpJitter: 15 * time.Millisecond, DownJitter: 8 * time.Millisecond},
		wifi: phone.Leg{UpJitter: 5 * time.Millisecond, DownJitter: 6 * time.Millisecond}},
}

type options struct {
	config      string
	duration    time.Duration
	concurrency int
	minLen      time.Duration
	maxLen      time.Duration
	seed        uint64
	wait        time.Duration
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sori-demo:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sori-demo", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.config, "config", "testdata/demo/sori.yaml", "sori's configuration: its SIP address, domain, users and networks")
	fs.DurationVar(&o.duration, "duration", 3*time.Minute, "how long to start calls for (the last ones end after it)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "calls at once")
	fs.DurationVar(&o.minLen, "min-length", 5*time.Second, "shortest call")
	fs.DurationVar(&o.maxLen, "max-length", 10*time.Second, "longest call")
	fs.Uint64Var(&o.seed, "seed", 1, "random source of the calls and their losses (the same seed, the same traffic)")
	fs.DurationVar(&o.wait, "wait", 20*time.Second, "how long to wait for sori's /healthz first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.concurrency < 1 || o.minLen < 100*time.Millisecond || o.maxLen < o.minLen || o.duration <= 0 {
		return errors.New("-concurrency ≥ 1, 100ms ≤ -min-length ≤ -max-length and -duration > 0")
	}
	cfg, err := config.Load(o.config)
	if err != nil {
		return err
	}
	server, err := udpListener(cfg)
	if err != nil {
		return err
	}
	base := "http://" + cfg.HTTP.Listen
	if cfg.HTTP.Listen == "" {
		return errors.New("the configuration has no http.listen: the quality page would not be served")
	}
	if err := waitHealthy(base+"/healthz", o.wait); err != nil {
		return err
	}
	users, err := demoUsers(cfg)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fmt.Fprintf(stdout, "sori-demo: registering %d phones with sori at %s\n", len(users), server)
	phones := make([]*phone.Phone, len(users))
	for i, u := range users {
		p, err := phone.New(phone.Config{Server: server, Domain: cfg.SIP.Domain, User: u.name, Password: u.password, Addr: u.addr, Log: log})
		if err != nil {
			return fmt.Errorf("phone %s on %s: %w (is %s on the loopback interface?)", u.name, u.addr, err, u.addr)
		}
		defer p.Close()
		if err := p.Register(ctx, time.Hour); err != nil {
			return err
		}
		phones[i] = p
	}
	// Registrations last an hour: refresh them for longer runs.
	go func() {
		t := time.NewTicker(30 * time.Minute)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				for _, p := range phones {
					if err := p.Register(ctx, time.Hour); err != nil {
						log.Warn("re-register", "user", p.User(), "error", err)
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	fmt.Fprintf(stdout, "sori-demo: calling for %v, %d calls at once, %v-%v each\n", o.duration, o.concurrency, o.minLen, o.maxLen)
	t := newTally()
	g := &generator{o: o, users: users, phones: phones, busy: make([]bool, len(users)), rng: rand.New(rand.NewPCG(o.seed, 0)), tally: t, log: log}
	end := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	for w := range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the first calls over a second, as phones would.
			select {
			case <-time.After(time.Duration(w) * time.Second / time.Duration(o.concurrency)):
			case <-ctx.Done():
				return
			}
			for time.Now().Before(end) && ctx.Err() == nil {
				g.oneCall(ctx)
			}
		}()
	}
	progress := time.NewTicker(15 * time.Second)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	start := time.Now()
loop:
	for {
		select {
		case <-progress.C:
			calls, failed := t.counts()
			fmt.Fprintf(stdout, "sori-demo: %3.0fs  %d calls ended, %d failed\n", time.Since(start).Seconds(), calls, failed)
		case <-done:
			break loop
		}
	}
	progress.Stop()
	calls, failed := t.counts()
	if ctx.Err() != nil {
		fmt.Fprintln(stdout, "sori-demo: interrupted")
	}
	fmt.Fprintf(stdout, "sori-demo: %d calls made, %d failed\n\nWhat the phones did (the losses the map should show):\n", calls, failed)
	t.print(stdout)
	fmt.Fprintf(stdout, "\nThe call quality map: %s/quality  (API: %s/api/quality?by=network,hop,access)\n", base, base)
	if calls == 0 {
		return errors.New("no call went through")
	}
	return nil
}

// demoUser is one configured user and where its phone is.
type demoUser struct {
	name, password string
	carrier        *carrier
	plmn           string
	addr           netip.Addr
}

// demoUsers assigns the configured users with a password to carriers by
// their names' first letter, and addresses from each carrier's network.
func demoUsers(cfg *config.Config) ([]demoUser, error) {
	var out []demoUser
	next := map[string]int{}
	for _, u := range cfg.Users {
		if u.Password == "" {
			continue // only users whose password the demo knows
		}
		var c *carrier
		for i := range carriers {
			if strings.HasPrefix(u.Name, carriers[i].letter) {
				c = &carriers[i]
			}
		}
		if c == nil {
			continue
		}
		i := slices.IndexFunc(cfg.Networks, func(n config.Network) bool { return n.Name == c.network })
		if i < 0 || len(cfg.Networks[i].Prefixes) == 0 || len(cfg.Networks[i].PLMNs) == 0 {
			return nil, fmt.Errorf("networks: needs %s with a prefix and a PLMN", c.network)
		}
		n := cfg.Networks[i]
		prefix, err := netip.ParsePrefix(n.Prefixes[0])
		if err != nil || !prefix.Addr().Is4() || prefix.Bits() > 24 {
			return nil, fmt.Errorf("networks: %s: %q is not an IPv4 prefix of /24 or wider", n.Name, n.Prefixes[0])
		}
		a := prefix.Masked().Addr().As4()
		a[3] = byte(10 + next[c.network])
		next[c.network]++
		if a[3] > 250 {
			return nil, fmt.Errorf("too many users on %s", c.network)
		}
		out = append(out, demoUser{name: u.Name, password: u.Password, carrier: c, plmn: n.PLMNs[0], addr: netip.AddrFrom4(a)})
	}
	if len(out) < 2 {
		return nil, errors.New("the configuration has fewer than two demo users (a…, b…, c… with a password)")
	}
	return out, nil
}

func udpListener(cfg *config.Config) (netip.AddrPort, error) {
	for _, l := range cfg.Listeners() {
		if l.Transport == "udp" {
			a := l.Addr
			if a.Addr().IsUnspecified() {
				a = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Port())
			}
			return a, nil
		}
	}
	return netip.AddrPort{}, errors.New("sip.listen has no udp listener")
}

func waitHealthy(url string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sori does not answer at %s (%v)", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// generator picks the calls.
type generator struct {
	o      options
	users  []demoUser
	phones []*phone.Phone
	log    *slog.Logger
	tally  *tally

	mu   sync.Mutex
	busy []bool
	rng  *rand.Rand
}

// pick reserves two idle phones and draws a call's parameters.
func (g *generator) pick() (a, b int, spec phone.Spec, accessA, accessB string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var idle []int
	for i, busy := range g.busy {
		if !busy {
			idle = append(idle, i)
		}
	}
	if len(idle) < 2 {
		return 0, 0, spec, "", "", false
	}
	i := g.rng.IntN(len(idle))
	a = idle[i]
	idle = slices.Delete(idle, i, i+1)
	b = idle[g.rng.IntN(len(idle))]
	g.busy[a], g.busy[b] = true, true
	length := g.o.minLen + time.Duration(g.rng.Int64N(int64(g.o.maxLen-g.o.minLen)+1))
	spec.Packets = int(length / (20 * time.Millisecond))
	spec.CalleeHangsUp = g.rng.IntN(2) == 1
	spec.Caller, accessA = g.leg(g.users[a])
	spec.Callee, accessB = g.leg(g.users[b])
	return a, b, spec, accessA, accessB, true
}

// leg draws a phone's access for one call: its carrier's Wi-Fi or LTE,
// with a cell identity or access point of its own.
func (g *generator) leg(u demoUser) (phone.Leg, string) {
	c := u.carrier
	var l phone.Leg
	access := "lte"
	if g.rng.Float64() < c.wifiShare {
		l, access = c.wifi, "wifi"
		l.PANI = fmt.Sprintf("IEEE-802.11; i-wlan-node-id=%012x", g.rng.Uint64()&0xffffffffffff)
	} else {
		l = c.lte
		// The cell identity: the PLMN, a tracking area code and a cell.
		l.PANI = fmt.Sprintf("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=%s%04x%07x", u.plmn, g.rng.IntN(1<<16), g.rng.IntN(1<<28))
	}
	l.Seed = g.rng.Uint64()
	return l, access
}

func (g *generator) release(a, b int) {
	g.mu.Lock()
	g.busy[a], g.busy[b] = false, false
	g.mu.Unlock()
}

func (g *generator) oneCall(ctx context.Context) {
	a, b, spec, accessA, accessB, ok := g.pick()
	if !ok {
		time.Sleep(100 * time.Millisecond)
		return
	}
	defer g.release(a, b)
	res, err := phone.Call(ctx, g.phones[a], g.phones[b], spec)
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("call failed", "caller", g.users[a].name, "callee", g.users[b].name, "error", err)
			g.tally.fail()
		}
		return
	}
	g.tally.add(g.users[a].carrier.network, accessA, res.Caller, g.users[b].carrier.network, accessB, res.Callee)
}

// tally adds up what the phones did, per network, access and hop.
type tally struct {
	mu     sync.Mutex
	calls  int
	failed int
	cells  map[[3]string]*count
}

type count struct{ sides, packets, lost int }

func newTally() *tally { return &tally{cells: map[[3]string]*count{}} }

func (t *tally) fail() {
	t.mu.Lock()
	t.failed++
	t.mu.Unlock()
}

func (t *tally) counts() (calls, failed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.calls, t.failed
}

func (t *tally) add(netA, accessA string, a phone.Side, netB, accessB string, b phone.Side) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	cell := func(network, access, hop string) *count {
		k := [3]string{network, access, hop}
		if t.cells[k] == nil {
			t.cells[k] = &count{}
		}
		return t.cells[k]
	}
	for _, s := range []struct {
		network, access string
		side            phone.Side
	}{{netA, accessA, a}, {netB, accessB, b}} {
		up := cell(s.network, s.access, "uplink")
		up.sides++
		up.packets += s.side.Sent
		up.lost += s.side.UpDropped
		down := cell(s.network, s.access, "downlink")
		down.sides++
		down.packets += s.side.Received + s.side.DownDropped
		down.lost += s.side.DownDropped
	}
}

func (t *tally) print(out io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([][3]string, 0, len(t.cells))
	for k := range t.cells {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [3]string) int { return slices.Compare(a[:], b[:]) })
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tACCESS\tHOP\tCALL SIDES\tPACKETS\tLOST\tLOSS %")
	for _, k := range keys {
		c := t.cells[k]
		pct := 0.0
		if c.packets > 0 {
			pct = 100 * float64(c.lost) / float64(c.packets)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.2f\n", k[0], k[1], k[2], c.sides, c.packets, c.lost, pct)
	}
	_ = tw.Flush()
}
