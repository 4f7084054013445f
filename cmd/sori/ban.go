package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/sip/abuse/bans"
)

const banUsage = "usage: sori ban list | add IP [-for 1h] [-reason TEXT] | remove IP [-config FILE]"

// banCommand manages the ban list: in Redis directly with a Redis store
// (every node learns the change at once), else through the running node's
// HTTP API on http.listen.
func banCommand(ctx context.Context, configPath string, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New(banUsage)}
	}
	verb := args[0]
	fs := flag.NewFlagSet("sori ban "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&configPath, "config", configPath, "configuration file")
	dur := fs.String("for", "1h", "how long the ban lasts (add)")
	reason := fs.String("reason", "manual", "why (add)")
	var addrs []string
	rest := args[1:]
	for { // flags may come before or after IP
		if err := fs.Parse(rest); err != nil {
			return usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		addrs = append(addrs, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch {
	case verb == "list" && len(addrs) == 0:
	case (verb == "add" || verb == "remove") && len(addrs) == 1:
	default:
		return usageError{errors.New(banUsage)}
	}
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var api banAPI
	if cfg.Registrar.Store == "memory" {
		if cfg.HTTP.Listen == "" {
			return errors.New("registrar.store is memory and http.listen is empty: the ban list lives in the running sori, which serves it on http.listen")
		}
		api = httpBans{base: "http://" + cfg.HTTP.Listen}
	} else {
		st, err := openStore(cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		api = redisBans{sharedBans(st)}
	}

	switch verb {
	case "list":
		list, err := api.list(ctx)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ADDRESS\tUNTIL\tSINCE\tNODE\tREASON")
		for _, b := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", b.Address, b.Until.Format(time.RFC3339), b.Since.Format(time.RFC3339), b.Node, b.Reason)
		}
		return w.Flush()
	case "add":
		b, err := parseBan(banRequest{Address: addrs[0], For: *dur, Reason: *reason}, "cli", time.Now())
		if err != nil {
			return err
		}
		if err := api.add(ctx, b); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "banned %s until %s\n", b.Address, b.Until.Format(time.RFC3339))
		return nil
	default: // remove
		a, err := netip.ParseAddr(addrs[0])
		if err != nil {
			return fmt.Errorf("%q is not an IP address", addrs[0])
		}
		if err := api.remove(ctx, a.Unmap()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unbanned %s\n", a.Unmap())
		return nil
	}
}

type banAPI interface {
	list(ctx context.Context) ([]bans.Ban, error)
	add(ctx context.Context, b bans.Ban) error
	remove(ctx context.Context, a netip.Addr) error
}

type redisBans struct{ s bans.Shared }

func (r redisBans) list(ctx context.Context) ([]bans.Ban, error) { return r.s.All(ctx, time.Now()) }
func (r redisBans) add(ctx context.Context, b bans.Ban) error    { return r.s.Add(ctx, b) }
func (r redisBans) remove(ctx context.Context, a netip.Addr) error {
	return r.s.Remove(ctx, a)
}

type httpBans struct{ base string }

func (h httpBans) do(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sori at %s: %w", h.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("sori at %s: %s: %s", h.base, resp.Status, strings.TrimSpace(string(msg)))
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (h httpBans) list(ctx context.Context) ([]bans.Ban, error) {
	var out []bans.Ban
	err := h.do(ctx, http.MethodGet, "/bans", nil, http.StatusOK, &out)
	return out, err
}

func (h httpBans) add(ctx context.Context, b bans.Ban) error {
	return h.do(ctx, http.MethodPost, "/bans", banRequest{Address: b.Address.String(), For: b.Until.Sub(b.Since).String(), Reason: b.Reason},
		http.StatusCreated, nil)
}

func (h httpBans) remove(ctx context.Context, a netip.Addr) error {
	return h.do(ctx, http.MethodDelete, "/bans/"+url.PathEscape(a.String()), nil, http.StatusNoContent, nil)
}
