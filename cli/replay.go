package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"code.cloudfoundry.org/cli/v8/plugin"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func newReplayCmd(open targetOpener, standalone bool) *cobra.Command {
	var (
		f            opsFlags
		tp           string
		since, until string
	)
	cmd := &cobra.Command{
		Use:   "replay APP --topic T --since TIME|DURATION [--until TIME|DURATION]",
		Short: "Deliver a window of a topic's past events again, to one app only",
		Long: "Deliver the events of topic T published from --since up to --until (default: now) again to APP\n" +
			"alone, even after every mapped app acked them (for example after fixing a bug). Each topic\n" +
			"keeps its events for the replay window (" + provision.EnvReplayWindow + ", default 24h); a window older\n" +
			"than what is kept is refused. TIME is RFC 3339 (2026-12-01T09:30:00Z) or local\n" +
			"\"2026-12-01 09:30\"; DURATION (90m, 2h) means that long ago.",
		Example: "  hottopic replay orders --topic orders.created --since 2h\n  hottopic replay orders --topic orders.created --since 2026-12-01T09:00:00Z --until 2026-12-01T10:00:00Z",
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tp == "" {
				return errors.New("--topic is required: the topic whose events to replay")
			}
			if err := checkTopicFlag(tp); err != nil {
				return err
			}
			now := time.Now()
			from, err := parseWhen("--since", since, now)
			if err != nil {
				return err
			}
			var to time.Time
			if until != "" {
				if to, err = parseWhen("--until", until, now); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			env, guid, err := openOps(ctx, open, standalone, f, args[0], "replay events to app '"+args[0]+"'")
			if err != nil {
				return err
			}
			defer env.close()
			r, err := env.be.replay(ctx, guid, args[0], tp, from, to)
			if errors.Is(err, ops.ErrNotMapped) {
				return err
			}
			// Printed once the replay answered, the same either way.
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Replaying events of topic %s from %s to app %s %s...\n", tp, from.Local().Format(time.DateTime), args[0], env.where)
			if err != nil {
				return err
			}
			if r.Events == 0 {
				fmt.Fprintln(out, "replayed 0 events: none was published in that window")
				return nil
			}
			fmt.Fprintf(out, "replayed %d event%s (published %s to %s), queued for app %s alone\n", r.Events, plural(r.Events),
				r.First.Local().Format(time.DateTime), r.Last.Local().Format(time.DateTime), args[0])
			return nil
		},
	}
	f.add(cmd, standalone)
	cmd.Flags().StringVar(&tp, "topic", "", "the topic whose events to replay (required)")
	cmd.Flags().StringVar(&since, "since", "", "start of the window: TIME or DURATION ago (required)")
	cmd.Flags().StringVar(&until, "until", "", "end of the window, exclusive: TIME or DURATION ago (default: now)")
	_ = cmd.MarkFlagRequired("since")
	return cmd
}

// parseWhen reads TIME (RFC 3339, or local "2006-01-02 15:04[:05]" /
// "2006-01-02T15:04[:05]" / "2006-01-02") or DURATION (that long before now).
func parseWhen(flag, v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%s %q: a duration means that long ago and must not be negative", flag, v)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q: want a time (2026-12-01T09:30:00Z, \"2026-12-01 09:30\") or a duration ago (90m, 2h)", flag, v)
}

// newMigrateStreamsCmd is the operator's command that gives existing topic
// streams their replay window: JetStream cannot change a stream's retention,
// and Hot Topic never reconfigures an existing stream on its own.
func newMigrateStreamsCmd() *cobra.Command {
	var (
		natsURL, dataDir string
		dryRun           bool
	)
	cmd := &cobra.Command{
		Use:   "migrate-streams",
		Short: "Give topic streams made before the replay window one (an archive stream sourced from each)",
		Long: "Topic streams made before replay existed (or while " + provision.EnvReplayWindow + " was 0) keep no\n" +
			"replay window. This adds one to each: an archive stream HTA_<topic> sourced from the topic stream,\n" +
			"keeping events for " + provision.EnvReplayWindow + " (default 24h). The topic streams themselves are\n" +
			"not changed. An archive holds the events from the moment it is made (and those still queued).\n" +
			"NATS is found as `hottopic publish` finds it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			so, err := provision.DefaultStreamOptions()
			if err != nil {
				return err
			}
			cfg, hint, bus, err := publishTarget(natsURL, "", dataDir, os.Getenv)
			if err == nil && bus != nil {
				// The dev runtime's default bus, with the rights to change streams.
				cfg, err = cfenv.NATSFromService(bus.Admin)
			}
			if err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
			nc, err := cfenv.Connect(cctx, cfg, "hottopic-migrate-streams")
			cancel()
			if err != nil {
				return fmt.Errorf("%v%s", err, hint)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			res, err := ops.MigrateStreams(cmd.Context(), js, so, dryRun)
			out := cmd.OutOrStdout()
			created, kept := 0, 0
			for _, m := range res {
				switch {
				case m.Created:
					created++
					fmt.Fprintf(out, "%s: archive %s created (replay window %s)\n", m.Topic, m.Archive, so.Window())
				case m.Upgraded && dryRun:
					kept++
					fmt.Fprintf(out, "%s: archive %s would get a consumer of its own on %s (so it misses no event)\n", m.Topic, m.Archive, m.Stream)
				case m.Upgraded:
					kept++
					fmt.Fprintf(out, "%s: archive %s now copies through a consumer of its own on %s (it misses no event from now on)\n", m.Topic, m.Archive, m.Stream)
				case m.Had:
					kept++
				default:
					fmt.Fprintf(out, "%s: would get archive %s\n", m.Topic, m.Archive)
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%d topic stream%s: %d archive%s created, %d already had one\n", len(res), plural(len(res)), created, plural(created), kept)
			if dryRun {
				fmt.Fprintln(out, "dry run: nothing changed")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&natsURL, "nats", "", "NATS server URL (default: HOTTOPIC_NATS_URL, VCAP_SERVICES, the running hottopic dev)")
	cmd.Flags().StringVar(&dataDir, "data-dir", state.DefaultDir, "data directory of the running hottopic dev")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say which topics would get an archive")
	return cmd
}

// replayPluginCommand is replay (and dashboard) as cf lists them.
func replayPluginCommand() plugin.Command {
	return plugin.Command{
		Name:     "replay",
		HelpText: "Deliver a window of a topic's past events again, to one app only",
		UsageDetails: plugin.Usage{
			Usage: "cf replay APP_NAME --topic T --since TIME|DURATION [--until TIME|DURATION]",
			Options: map[string]string{
				"topic": "the topic whose events to replay", "since": "start of the window: TIME or DURATION ago",
				"until": "end of the window (default now)", "nats": "NATS server URL instead of the scaler (default $" + cfenv.EnvNATSURL + " or VCAP_SERVICES)",
				"scaler": "URL of the scaler, which does the work with your cf token (default $" + EnvScalerURL + ")",
			},
		},
	}
}
