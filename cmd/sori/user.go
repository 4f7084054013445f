package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/weather"
)

// userCommand manages subscribers in the configured store.
func userCommand(ctx context.Context, configPath string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("usage: sori user add|del|list [NAME] [--password P] [--number +E164]... [--tag KEY=VALUE]... [-config FILE]")}
	}
	verb := args[0]
	fs := flag.NewFlagSet("sori user "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&configPath, "config", configPath, "configuration file")
	password := fs.String("password", "", "password (add; read from standard input when not given)")
	var numbers numberList
	fs.Var(&numbers, "number", "an E.164 number the user owns, e.g. +821011112222 (add; repeat for more)")
	tags := tagList{}
	fs.Var(tags, "tag", "a KEY=VALUE label for the quality map, e.g. plan=lte-62 (add; repeat for more)")
	// Flags may come before or after NAME.
	var names []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			return usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		rest = fs.Args()[1:]
	}

	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	if cfg.Registrar.Store == "memory" {
		return fmt.Errorf("registrar.store is memory: subscribers live inside the running sori only; " +
			"list them under users: in the configuration, or use a redis:// store to manage them with sori user")
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	needName := func() (string, error) {
		if len(names) != 1 {
			return "", usageError{fmt.Errorf("sori user %s needs exactly one NAME", verb)}
		}
		n := names[0]
		if strings.ContainsAny(n, " \t@:;<>\"") {
			return "", fmt.Errorf("%q is not a SIP user name", n)
		}
		return n, nil
	}
	switch verb {
	case "add":
		name, err := needName()
		if err != nil {
			return err
		}
		pw := *password
		if pw == "" {
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read password: %w", err)
			}
			pw = strings.TrimRight(line, "\r\n")
		}
		if pw == "" {
			return errors.New("empty password: give --password or write it to standard input")
		}
		sub := auth.NewSubscriber(name, cfg.SIP.Domain, pw)
		sub.Numbers = numbers
		if len(tags) > 0 {
			sub.Tags = tags
		}
		for _, n := range numbers {
			if owner, err := st.SubscriberByNumber(ctx, n); err == nil && owner.Name != name {
				return fmt.Errorf("%s is already %s's number", n, owner.Name)
			}
		}
		if err := st.PutSubscriber(ctx, sub); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s saved (realm %s)\n", name, cfg.SIP.Domain)
	case "del":
		name, err := needName()
		if err != nil {
			return err
		}
		if err := st.DeleteSubscriber(ctx, name); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no user %s in the store", name)
			}
			return err
		}
		fmt.Fprintf(stdout, "user %s deleted\n", name)
	case "list":
		subs, err := st.ListSubscribers(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSOURCE\tREALM\tNUMBERS\tTAGS")
		for _, u := range cfg.Users {
			fmt.Fprintf(tw, "%s\tconfig\t%s\t%s\t%s\n", u.Name, cfg.SIP.Domain, strings.Join(u.Numbers, ","), tagList(u.Tags))
		}
		for _, s := range subs {
			fmt.Fprintf(tw, "%s\tstore\t%s\t%s\t%s\n", s.Name, s.Realm, strings.Join(s.Numbers, ","), tagList(s.Tags))
		}
		return tw.Flush()
	default:
		return usageError{fmt.Errorf("unknown user command %q (add, del, list)", verb)}
	}
	return nil
}

// tagList is a repeatable --tag KEY=VALUE flag.
type tagList map[string]string

func (l tagList) String() string {
	out := make([]string, 0, len(l))
	for k, v := range l {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func (l tagList) Set(v string) error {
	k, val, ok := strings.Cut(strings.TrimSpace(v), "=")
	if !ok || !weather.ValidTagKey(k) || val == "" || strings.ContainsAny(val, ", \t") {
		return fmt.Errorf("%q is not KEY=VALUE (a key without = or commas, a value without commas or spaces)", v)
	}
	l[k] = val
	return nil
}

// numberList is a repeatable --number flag of E.164 numbers.
type numberList []string

func (l *numberList) String() string { return strings.Join(*l, ",") }

func (l *numberList) Set(v string) error {
	n := strings.TrimSpace(v)
	if len(n) < 8 || len(n) > 16 || n[0] != '+' || strings.Trim(n[1:], "0123456789") != "" {
		return fmt.Errorf("%q is not an E.164 number (+ and 7-15 digits)", v)
	}
	*l = append(*l, n)
	return nil
}
