package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/sip/trunks"
)

// trunkCommand: `sori trunk status` asks the running sori (at http.listen
// of the same configuration) for its gateways' state.
func trunkCommand(ctx context.Context, configPath string, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		return usageError{errors.New("usage: sori trunk status [-config FILE]")}
	}
	fs := flag.NewFlagSet("sori trunk status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&configPath, "config", configPath, "configuration file")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	if cfg.HTTP.Listen == "" {
		return errors.New("http.listen is empty: the running sori has no status endpoint")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cfg.HTTP.Listen+"/trunks", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sori at %s: %w", cfg.HTTP.Listen, err)
	}
	defer resp.Body.Close()
	var st []trunks.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("sori at %s: %w", cfg.HTTP.Listen, err)
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TRUNK\tGATEWAY\tPRIORITY\tWEIGHT\tSTATE\tCALLS")
	for _, s := range st {
		state := "up"
		if !s.Up {
			state = "down"
		}
		limit := "-"
		if s.MaxCalls > 0 {
			limit = fmt.Sprint(s.MaxCalls)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%d/%s\n", s.Trunk, s.Gateway, s.Priority, s.Weight, state, s.Calls, limit)
	}
	return w.Flush()
}
