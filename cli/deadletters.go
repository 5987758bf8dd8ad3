package cli

// Operations on dead letters and past events: dead-letters, dead-letter,
// redrive, purge-dead-letters (and replay, in replay.go). App names are
// resolved in the targeted space through the cf login. The work is done
// (opsbackend.go) against the `hottopic dev` runtime's NATS, or on Cloud
// Foundry through the scaler's API given by --scaler / HOTTOPIC_SCALER_URL
// (nothing but the cf login needed), else in the NATS given by --nats /
// HOTTOPIC_NATS_URL / VCAP_SERVICES.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"code.cloudfoundry.org/cli/v8/plugin"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/dev"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// Plugin names of the commands whose standalone names are too generic for cf.
const (
	pluginRedriveCommand = "redrive-dead-letters"
)

// opsFlags are the flags every operations command has.
type opsFlags struct {
	natsURL   string
	scalerURL string
	dataDir   string
	cf        bool
}

func (f *opsFlags) add(cmd *cobra.Command, standalone bool) {
	cmd.Flags().StringVar(&f.natsURL, "nats", "", "NATS server URL (default: the running hottopic dev; against Cloud Foundry HOTTOPIC_NATS_URL or VCAP_SERVICES)")
	cmd.Flags().StringVar(&f.scalerURL, "scaler", "", "Cloud Foundry: URL of the scaler, which does the work with your cf token (default $"+EnvScalerURL+"; needs no NATS credentials)")
	cmd.MarkFlagsMutuallyExclusive("nats", "scaler")
	if standalone {
		cmd.Flags().StringVar(&f.dataDir, "data-dir", state.DefaultDir, "data directory of the running hottopic dev")
		cmd.Flags().BoolVar(&f.cf, "cf", false, "work on the targeted Cloud Foundry space even when a `hottopic dev` runs here")
	}
}

// opsEnv is where an operations command works.
type opsEnv struct {
	be    opsBackend
	where string            // for progress lines
	names map[string]string // app GUID → name, the apps the user may see
	dev   bool
}

func (e *opsEnv) close() { e.be.close() }

// name is an app GUID's name, or the GUID when unknown.
func (e *opsEnv) name(guid string) string {
	if n, ok := e.names[guid]; ok {
		return n
	}
	return guid
}

// visible says whether the user may see app guid's letters: in the dev
// runtime all, on Cloud Foundry those of the targeted space's mapped apps.
func (e *opsEnv) visible(guid string) bool {
	_, ok := e.names[guid]
	return e.dev || ok
}

// openOps connects to where the command works and resolves appName (if any)
// to its GUID. A command that changes something (write: what it does, for
// the error) needs, on Cloud Foundry, the rights of a Space Developer on the
// app: Cloud Controller is asked with an empty metadata update, which changes
// nothing and is refused to read-only roles (through the scaler, the scaler
// asks, with the user's token).
func openOps(ctx context.Context, open targetOpener, standalone bool, f opsFlags, appName, write string) (*opsEnv, string, error) {
	env := &opsEnv{names: map[string]string{}}
	var cfg cfenv.NATS
	var hint, guid string
	var err error
	var api *apiOps
	st, stErr := state.Read(orDefault(f.dataDir, state.DefaultDir))
	if standalone && !f.cf && stErr == nil {
		env.dev, env.where = true, "the `hottopic dev` runtime"
		if f.natsURL != "" {
			if cfg, err = cfenv.NATSFromURL(f.natsURL); err != nil {
				return nil, "", fmt.Errorf("--nats: %v", err)
			}
		} else if cfg, err = st.OpsNATS(appName); err != nil {
			return nil, "", err
		}
		hint = " (is `hottopic dev` still running?)"
		if live, err := fetchScaler(ctx, st.ScalerURL, nil); err == nil {
			for _, m := range live.Mappings {
				env.names[m.AppGUID] = m.AppName
			}
		}
		if appName != "" {
			guid = dev.AppGUID(appName)
			if _, ok := env.names[guid]; !ok && len(env.names) > 0 {
				return nil, "", fmt.Errorf("app '%s' not found in the `hottopic dev` runtime", appName)
			}
			env.names[guid] = appName
		}
	} else {
		t, err := open(ctx)
		if err != nil {
			return nil, "", err
		}
		env.where = "in org " + t.org + " / space " + t.space
		apps, err := t.cc.mappedApps(ctx, t.spaceGUID)
		if err != nil {
			return nil, "", ccFailure("list the apps with event mappings", err)
		}
		scalerURL := f.scalerURL
		if scalerURL == "" && f.natsURL == "" {
			scalerURL = os.Getenv(EnvScalerURL)
		}
		if scalerURL != "" {
			if err := checkScalerURL(scalerURL); err != nil {
				return nil, "", err
			}
			hc := newHTTPClient(false)
			hc.Timeout = 0 // each call has its own deadline; a redrive waits for the app
			api = &apiOps{base: strings.TrimRight(scalerURL, "/"), auth: t.cc.auth, hc: hc, write: write}
		}
		for _, a := range apps {
			env.names[a.GUID] = a.Name
			if api != nil {
				api.apps = append(api.apps, a.GUID)
			}
		}
		if appName != "" {
			a, err := resolveApp(ctx, t, appName)
			if err != nil {
				return nil, "", err
			}
			guid = a.GUID
			env.names[guid] = a.Name
			if write != "" && api == nil {
				if _, err := t.cc.patchMetadata(ctx, guid, metadataPatch{}); err != nil {
					return nil, "", ccFailure(write, err)
				}
			}
		}
		switch {
		case api != nil:
			env.be = api
			return env, guid, nil
		case f.natsURL != "":
			if cfg, err = cfenv.NATSFromURL(f.natsURL); err != nil {
				return nil, "", fmt.Errorf("--nats: %v", err)
			}
		default:
			cfg, err = cfenv.NATSFromEnv(os.Getenv)
			if errors.Is(err, cfenv.ErrNoNATS) {
				return nil, "", errors.New("dead letters and replay on Cloud Foundry go through the scaler (give --scaler URL or set " + EnvScalerURL + ") or NATS (give --nats URL or set " + cfenv.EnvNATSURL + ", with the credentials of the Hot Topic NATS service)")
			}
			if err != nil {
				return nil, "", err
			}
		}
	}
	n := &natsOps{}
	if n.streams, err = provision.DefaultStreamOptions(); err != nil {
		return nil, "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	n.nc, err = cfenv.Connect(cctx, cfg, "hottopic-ops")
	cancel()
	if err != nil {
		return nil, "", fmt.Errorf("%v%s", err, hint)
	}
	if n.js, err = jetstream.New(n.nc); err != nil {
		n.nc.Close()
		return nil, "", err
	}
	env.be = n
	return env, guid, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func checkTopicFlag(t string) error {
	if t == "" {
		return nil
	}
	if err := topic.Validate(t); err != nil {
		return fmt.Errorf("--topic: %v", err)
	}
	return nil
}

// letterJSON is one row of `dead-letters --json`.
type deadLettersJSON struct {
	Source      string         `json:"source"`
	DeadLetters []ops.Letter   `json:"dead_letters"`
	Counts      map[string]int `json:"counts"` // app name → dead letters
}

func newDeadLettersCmd(open targetOpener, standalone bool) *cobra.Command {
	var (
		f      opsFlags
		tp     string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "dead-letters [APP]",
		Short: "List dead letters, newest first, with a count per app",
		Long: "List the events that could not be delivered (HOTTOPIC_DLQ): app, topic, time, delivery\n" +
			"attempts, reason and size, newest first, with a count per app. ID is what dead-letter\n" +
			"and redrive take.",
		Example: "  hottopic dead-letters\n  hottopic dead-letters orders --topic orders.created --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTopicFlag(tp); err != nil {
				return err
			}
			var appName string
			if len(args) == 1 {
				appName = args[0]
			}
			env, guid, err := openOps(cmd.Context(), open, standalone, f, appName, "")
			if err != nil {
				return err
			}
			defer env.close()
			all, err := env.be.list(cmd.Context(), guid, tp)
			if err != nil {
				return err
			}
			letters := []ops.Letter{}
			counts := map[string]int{}
			for _, l := range all {
				if env.visible(l.App) {
					l.AppName = env.name(l.App)
					letters = append(letters, l)
					counts[l.AppName]++
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				src := "cf"
				if env.dev {
					src = "dev"
				}
				return writeJSON(out, deadLettersJSON{Source: src, DeadLetters: letters, Counts: counts})
			}
			fmt.Fprintf(out, "Getting dead letters %s...\n\n", env.where)
			if len(letters) == 0 {
				fmt.Fprintln(out, "No dead letters.")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "id\tapp\ttopic\ttime\tdeliveries\treason\tsize")
			for _, l := range letters {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", l.ID, l.AppName, l.Topic, l.Time.Local().Format(time.DateTime),
					l.Deliveries, shorten(l.Reason, 100), byteSize(l.Size))
			}
			_ = tw.Flush()
			fmt.Fprintln(out)
			names := make([]string, 0, len(counts))
			for n := range counts {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(out, "%s: %d dead letter%s\n", n, counts[n], plural(counts[n]))
			}
			return nil
		},
	}
	f.add(cmd, standalone)
	cmd.Flags().StringVar(&tp, "topic", "", "only dead letters of this topic")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return cmd
}

func newDeadLetterCmd(open targetOpener, standalone bool) *cobra.Command {
	var (
		f   opsFlags
		raw bool
	)
	cmd := &cobra.Command{
		Use:     "dead-letter APP ID",
		Short:   "Show one dead letter whole: headers, reason, payload",
		Example: "  hottopic dead-letter orders 42\n  hottopic dead-letter orders 42 --raw > event.bin",
		Args:    exactArgs("APP", "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil || id == 0 {
				return fmt.Errorf("dead letter ID %q: want a whole number from 1 (the id column of dead-letters)", args[1])
			}
			env, guid, err := openOps(cmd.Context(), open, standalone, f, args[0], "")
			if err != nil {
				return err
			}
			defer env.close()
			l, err := env.be.get(cmd.Context(), guid, args[0], id)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if raw {
				_, err := out.Write(l.Data)
				return err
			}
			writeLetter(out, l, env.name(l.App))
			return nil
		},
	}
	f.add(cmd, standalone)
	cmd.Flags().BoolVar(&raw, "raw", false, "write only the payload, as it is, to stdout")
	return cmd
}

func writeLetter(out io.Writer, l ops.Letter, app string) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%d\n", l.ID)
	fmt.Fprintf(tw, "app:\t%s\n", app)
	fmt.Fprintf(tw, "topic:\t%s (stream %s, sequence %d)\n", l.Topic, topic.StreamName(l.Topic), l.StreamSequence)
	fmt.Fprintf(tw, "time:\t%s\n", l.Time.Local().Format(time.RFC3339))
	fmt.Fprintf(tw, "deliveries:\t%d\n", l.Deliveries)
	fmt.Fprintf(tw, "reason:\t%s\n", l.Reason)
	if l.Redrives > 0 {
		fmt.Fprintf(tw, "redriven:\t%d time%s; earlier reasons: %s\n", l.Redrives, plural(l.Redrives), strings.Join(l.PreviousReasons, " | "))
	}
	_ = tw.Flush()
	fmt.Fprintln(out, "\nheaders:")
	keys := make([]string, 0, len(l.Header))
	for k := range l.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range l.Header[k] {
			fmt.Fprintf(out, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintf(out, "\npayload (%s):\n", byteSize(l.Size))
	if utf8.Valid(l.Data) && !slices.ContainsFunc([]rune(string(l.Data)), func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' && r != '\r' }) {
		fmt.Fprintln(out, string(l.Data))
	} else {
		fmt.Fprintln(out, "  (binary; use --raw to write it as it is)")
	}
}

func newRedriveCmd(open targetOpener, standalone bool) *cobra.Command {
	var (
		f     opsFlags
		tp    string
		ids   []string
		limit int
		wait  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "redrive APP",
		Short: "Send an app's dead letters back to that app only; each leaves the dead letters once the app took it",
		Long: "Send APP's dead letters (oldest first) back to APP alone, over its own redrive consumer: other\n" +
			"apps mapped to the same topic do not see them again. A letter is removed once the app took the\n" +
			"event (2xx); one that fails again becomes a new dead letter that keeps its history. Waits up to\n" +
			"--wait for the app (a scaled-to-zero app is started by the scaler), then reports\n" +
			"\"redriven N, failed M\"; events not taken by then stay queued for the app.",
		Example: "  hottopic redrive orders\n  hottopic redrive orders --topic orders.created --limit 100\n  hottopic redrive orders --id 42 --id 43",
		Aliases: []string{pluginRedriveCommand},
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTopicFlag(tp); err != nil {
				return err
			}
			if limit < 0 {
				return fmt.Errorf("--limit must be 0 (all) or more, got %d", limit)
			}
			if wait <= 0 {
				return fmt.Errorf("--wait must be positive, got %s", wait)
			}
			want, err := parseIDs(ids)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			env, guid, err := openOps(ctx, open, standalone, f, args[0], "redrive the dead letters of app '"+args[0]+"'")
			if err != nil {
				return err
			}
			defer env.close()
			out := cmd.OutOrStdout()
			n := 0
			res, err := env.be.redrive(ctx, guid, args[0], tp, want, limit, wait, func(selected int) {
				if n = selected; n == 0 {
					fmt.Fprintf(out, "App '%s' has no dead letters%s.\n", args[0], ops.TopicNote(tp))
				} else {
					fmt.Fprintf(out, "Redriving %d dead letter%s to app %s %s...\n", n, plural(n), args[0], env.where)
				}
			})
			if err != nil || n == 0 {
				return err
			}
			for _, fl := range res.Failures {
				fmt.Fprintf(out, "  dead letter %d: %s\n", fl.ID, fl.Reason)
			}
			line := fmt.Sprintf("redriven %d, failed %d", res.Redriven, res.Failed)
			if res.Pending > 0 {
				line += fmt.Sprintf(", not taken yet %d (queued for the app; their dead letters go once it takes them)", res.Pending)
			}
			fmt.Fprintln(out, line)
			if res.Failed > 0 {
				return fmt.Errorf("%d of %d dead letters failed", res.Failed, n)
			}
			return nil
		},
	}
	f.add(cmd, standalone)
	cmd.Flags().StringVar(&tp, "topic", "", "only dead letters of this topic")
	cmd.Flags().StringArrayVar(&ids, "id", nil, "only this dead letter (repeatable)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many, oldest first (0: all)")
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for the app to take them")
	return cmd
}

func parseIDs(ids []string) ([]uint64, error) {
	var out []uint64
	for _, s := range ids {
		for _, part := range strings.Split(s, ",") {
			id, err := strconv.ParseUint(strings.TrimSpace(part), 10, 64)
			if err != nil || id == 0 {
				return nil, fmt.Errorf("--id %q: want a whole number from 1 (the id column of dead-letters)", part)
			}
			out = append(out, id)
		}
	}
	return out, nil
}

func newPurgeDeadLettersCmd(open targetOpener, standalone bool) *cobra.Command {
	var (
		f         opsFlags
		tp        string
		olderThan time.Duration
		force     bool
	)
	cmd := &cobra.Command{
		Use:     "purge-dead-letters APP",
		Short:   "Delete an app's dead letters (asks first; -f does not)",
		Example: "  hottopic purge-dead-letters orders --older-than 72h\n  hottopic purge-dead-letters orders --topic orders.created -f",
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTopicFlag(tp); err != nil {
				return err
			}
			if olderThan < 0 {
				return fmt.Errorf("--older-than must not be negative, got %s", olderThan)
			}
			ctx := cmd.Context()
			env, guid, err := openOps(ctx, open, standalone, f, args[0], "purge the dead letters of app '"+args[0]+"'")
			if err != nil {
				return err
			}
			defer env.close()
			what := "dead letters of app " + args[0] + ops.TopicNote(tp)
			all, err := env.be.list(ctx, guid, tp)
			if err != nil {
				return err
			}
			letters := all
			if olderThan > 0 {
				what += " older than " + olderThan.String()
				cut := time.Now().Add(-olderThan)
				letters = slices.DeleteFunc(slices.Clone(all), func(l ops.Letter) bool { return !l.Time.Before(cut) })
			}
			out := cmd.OutOrStdout()
			if len(letters) == 0 {
				fmt.Fprintf(out, "No %s.\n", what)
				return nil
			}
			if !force {
				fmt.Fprintf(out, "Really delete %d %s?> ", len(letters), what)
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					fmt.Fprintln(out, "\nPurge cancelled; nothing deleted.")
					return nil
				}
			}
			n, err := env.be.purge(ctx, guid, tp, letters)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Deleted %d dead letter%s.\n", n, plural(n))
			return nil
		},
	}
	f.add(cmd, standalone)
	cmd.Flags().StringVar(&tp, "topic", "", "only dead letters of this topic")
	cmd.Flags().DurationVar(&olderThan, "older-than", 0, "only dead letters stored longer ago than this (e.g. 72h)")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	return cmd
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-1], "") + "…"
}

func byteSize(n int) string {
	switch {
	case n < 1024:
		return strconv.Itoa(n) + " B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/1024, 'f', 1, 64) + " KiB"
	default:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
}

// opsPluginCommands are the operations commands as cf lists them.
func opsPluginCommands() []plugin.Command {
	natsOpt := map[string]string{
		"scaler": "URL of the scaler, which does the work with your cf token (default $" + EnvScalerURL + ")",
		"nats":   "NATS server URL instead of the scaler (default $" + cfenv.EnvNATSURL + " or VCAP_SERVICES)",
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range natsOpt {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	return []plugin.Command{
		{
			Name:     "dead-letters",
			HelpText: "List dead letters of the targeted space's functions, newest first, with a count per app",
			UsageDetails: plugin.Usage{
				Usage:   "cf dead-letters [APP_NAME] [--topic T] [--json]",
				Options: with(map[string]string{"topic": "only dead letters of this topic", "json": "print JSON for scripts"}),
			},
		},
		{
			Name:     "dead-letter",
			HelpText: "Show one dead letter whole: headers, reason, payload",
			UsageDetails: plugin.Usage{
				Usage:   "cf dead-letter APP_NAME ID [--raw]",
				Options: with(map[string]string{"raw": "write only the payload, as it is, to stdout"}),
			},
		},
		{
			Name:     pluginRedriveCommand,
			HelpText: "Send an app's dead letters back to that app only",
			UsageDetails: plugin.Usage{
				Usage: "cf " + pluginRedriveCommand + " APP_NAME [--topic T] [--id ID]... [--limit N] [--wait D]",
				Options: with(map[string]string{"topic": "only dead letters of this topic", "id": "only this dead letter (repeatable)",
					"limit": "at most this many, oldest first", "wait": "how long to wait for the app to take them (default 1m)"}),
			},
		},
		{
			Name:     "purge-dead-letters",
			HelpText: "Delete an app's dead letters (asks first)",
			UsageDetails: plugin.Usage{
				Usage:   "cf purge-dead-letters APP_NAME [--topic T] [--older-than D] [-f]",
				Options: with(map[string]string{"topic": "only dead letters of this topic", "older-than": "only those stored longer ago than this", "f": "do not ask"}),
			},
		},
	}
}
