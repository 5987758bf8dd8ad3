package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// labelSelectorMapped selects the apps that have event mappings.
const labelSelectorMapped = mapping.LabelMapped + "=" + mapping.LabelMappedTrue

// settingFlag ties a map-event flag to the annotation it sets.
type settingFlag struct {
	name, ann, usage string
	isInt            bool
}

var settingFlags = []settingFlag{
	{"min", mapping.AnnMin, "lower bound of instances (default 0)", true},
	{"max", mapping.AnnMax, "upper bound of instances (default 10)", true},
	{"lag-per-instance", mapping.AnnLagPer, "target pending events per instance (default 10)", true},
	{"idle-seconds", mapping.AnnIdleSeconds, "idle time before scaling down to min (default 60)", true},
	{"concurrency", mapping.AnnConcurrency, "in-flight deliveries per instance (default 1)", true},
	{"path", mapping.AnnPath, "HTTP path events are POSTed to (default /)", false},
	{"timeout-seconds", mapping.AnnTimeout, "how long one delivery may take (default 60)", true},
	{"max-deliver", mapping.AnnMaxDeliver, "attempts before dead-lettering (default 5)", true},
	{"output-topic", mapping.AnnOutputTopic, "publish the app's non-empty 2xx response body to this topic", false},
	{"batch-size", mapping.AnnBatchSize, "events per POST, as a CloudEvents JSON batch (default 1: one event per POST)", true},
	{"batch-wait-ms", mapping.AnnBatchWait, "how long a partial batch may wait to fill, in ms (default 20)", true},
}

// cfCommands are the commands that work against Cloud Foundry, wired to
// where the login comes from (config.json standalone, RPC as a cf plugin).
func cfCommands(open targetOpener, standalone bool) []*cobra.Command {
	return []*cobra.Command{newMapEventCmd(open), newUnmapEventCmd(open), newEventsCmd(open, standalone),
		newDeadLettersCmd(open, standalone), newDeadLetterCmd(open, standalone), newRedriveCmd(open, standalone),
		newPurgeDeadLettersCmd(open, standalone), newReplayCmd(open, standalone), newDashboardCmd(open, standalone)}
}

func newMapEventCmd(open targetOpener) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "map-event APP TOPIC",
		Short: "Map a topic to an app: its events are delivered to the app, which is scaled by queue length",
		Long: "Map a topic to an app in the targeted space: adds TOPIC to the app's hottopic.io/topics\n" +
			"annotation, sets the given settings and the hottopic.io/mapped label, in one update of\n" +
			"the app's metadata. Running instances pick the change up without a restart. The app must\n" +
			"be bound to a hottopic service (cf bind-service APP BUS) or a user-provided NATS service\n" +
			"tagged hottopic or nats: without one it has no credentials to take its events with.",
		Example: "  hottopic map-event orders orders.created --max 20 --path /events",
		Args:    exactArgs("APP", "TOPIC"),
	}
	for _, f := range settingFlags {
		if f.isInt {
			cmd.Flags().Int(f.name, 0, f.usage)
		} else {
			cmd.Flags().String(f.name, "", f.usage)
		}
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		appName, t := args[0], args[1]
		if err := topic.Validate(t); err != nil {
			return err
		}
		set, err := changedSettings(cmd)
		if err != nil {
			return err
		}
		if err := checkSettingFlags(set); err != nil {
			return err
		}
		ctx := cmd.Context()
		target, err := open(ctx)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		fmt.Fprintf(out, "Mapping topic %s to app %s %s...\n", t, appName, target.where())
		app, err := resolveApp(ctx, target, appName)
		if err != nil {
			return err
		}
		patch, already, err := planMap(app, t, set)
		if err != nil {
			return err
		}
		if err := checkBinding(ctx, target, app); err != nil {
			return err
		}
		for _, w := range mapping.UnknownAnnotations(app.Metadata.Annotations) {
			fmt.Fprintf(cmd.ErrOrStderr(), "Warning: app %s: %s\n", appName, w)
		}
		if already {
			fmt.Fprintf(out, "Topic %s is already mapped to app %s.\n", t, appName)
		}
		if err := applyPatch(ctx, target, app, patch); err != nil {
			return err
		}
		fmt.Fprintln(out, "OK")
		return nil
	}
	return cmd
}

func newUnmapEventCmd(open targetOpener) *cobra.Command {
	return &cobra.Command{
		Use:   "unmap-event APP TOPIC",
		Short: "Unmap a topic from an app (the last one also removes the mapping's label and settings)",
		Args:  exactArgs("APP", "TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			appName, t := args[0], args[1]
			ctx := cmd.Context()
			target, err := open(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Unmapping topic %s from app %s %s...\n", t, appName, target.where())
			app, err := resolveApp(ctx, target, appName)
			if err != nil {
				return err
			}
			patch, mapped, last := planUnmap(app, t)
			if !mapped {
				// A topic that was never mapped must still be a valid name,
				// so a typo is reported rather than silently "removed".
				if err := topic.Validate(t); err != nil {
					return err
				}
				fmt.Fprintf(out, "Topic %s is not mapped to app %s.\nOK\n", t, appName)
				return nil
			}
			if err := applyPatch(ctx, target, app, patch); err != nil {
				return err
			}
			fmt.Fprintln(out, "OK")
			if last {
				fmt.Fprintf(out, "App %s has no event mappings left; Hot Topic no longer scales it (its instances stay as they are).\n", appName)
			}
			return nil
		},
	}
}

// changedSettings returns annotation → value for the flags the user gave.
func changedSettings(cmd *cobra.Command) (map[string]string, error) {
	set := map[string]string{}
	for _, f := range settingFlags {
		if !cmd.Flags().Changed(f.name) {
			continue
		}
		v, err := cmd.Flags().GetString(f.name)
		if f.isInt {
			var n int
			n, err = cmd.Flags().GetInt(f.name)
			v = strconv.Itoa(n)
		}
		if err != nil {
			return nil, err
		}
		set[f.ann] = v
	}
	return set, nil
}

// checkSettingFlags validates each given value on its own (ranges, path,
// output topic) and min against max when both are given, before anything
// is sent. The rules are mapping.Settings.Validate's.
func checkSettingFlags(set map[string]string) error {
	for _, f := range settingFlags {
		v, ok := set[f.ann]
		if !ok {
			continue
		}
		ann := map[string]string{mapping.AnnTopics: "t", f.ann: v}
		switch f.ann { // keep the other bound out of the way
		case mapping.AnnMin:
			if n, _ := strconv.Atoi(v); n > 0 {
				ann[mapping.AnnMax] = v
			}
		case mapping.AnnMax:
			ann[mapping.AnnMin] = "0"
		}
		if _, err := mapping.FromMetadata("", "", ann); err != nil {
			return fmt.Errorf("bad --%s: %v", f.name, err)
		}
	}
	minV, okMin := set[mapping.AnnMin]
	maxV, okMax := set[mapping.AnnMax]
	if okMin && okMax {
		lo, _ := strconv.Atoi(minV)
		hi, _ := strconv.Atoi(maxV)
		if lo > hi {
			return fmt.Errorf("bad --min/--max: --min %d is greater than --max %d", lo, hi)
		}
	}
	return nil
}

// resolveApp finds the app by name in the targeted space.
func resolveApp(ctx context.Context, t *cfTarget, name string) (*ccApp, error) {
	app, err := t.cc.appByName(ctx, t.spaceGUID, name)
	if err != nil {
		return nil, ccFailure(fmt.Sprintf("look up app '%s'", name), err)
	}
	if app == nil {
		return nil, fmt.Errorf("App '%s' not found in org %s / space %s", name, t.org, t.space)
	}
	if app.Metadata.Labels == nil {
		app.Metadata.Labels = map[string]string{}
	}
	if app.Metadata.Annotations == nil {
		app.Metadata.Annotations = map[string]string{}
	}
	return app, nil
}

func applyPatch(ctx context.Context, t *cfTarget, app *ccApp, p metadataPatch) error {
	if p.empty() {
		return nil
	}
	if _, err := t.cc.patchMetadata(ctx, app.GUID, p); err != nil {
		return ccFailure(fmt.Sprintf("change app '%s'", app.Name), err)
	}
	return nil
}

// ccFailure turns a CC error into the one line the user sees.
func ccFailure(action string, err error) error {
	var ce *ccError
	if !errors.As(err, &ce) {
		return err // already one line: not logged in, unreachable…
	}
	switch ce.Status {
	case 403:
		return fmt.Errorf("not authorized to %s: %s (you need the Space Developer role in this space)", action, ce.Title)
	case 404:
		return fmt.Errorf("cannot %s: %s", action, ce.Title)
	}
	return fmt.Errorf("cannot %s: %v", action, ce)
}

// planMap computes the single metadata PATCH that maps topic t with the
// given settings (annotation → value) onto app: only the keys whose value
// changes, plus the label when missing. already reports that t was mapped.
// The resulting mapping is validated as the scaler will read it.
func planMap(app *ccApp, t string, set map[string]string) (p metadataPatch, already bool, err error) {
	cur := app.Metadata.Annotations
	topics, err := topic.ParseList(cur[mapping.AnnTopics])
	if err != nil {
		return p, false, fmt.Errorf("app '%s' has a bad %s annotation: %v; remove that topic with unmap-event first", app.Name, mapping.AnnTopics, err)
	}
	already = slices.Contains(topics, t)
	if !already {
		topics = append(topics, t)
	}
	next := maps.Clone(cur)
	maps.Copy(next, set)
	next[mapping.AnnTopics] = strings.Join(topics, ",")
	if next[mapping.AnnOutputTopic] == "" {
		delete(next, mapping.AnnOutputTopic) // --output-topic "" turns it off
	}
	if _, err := mapping.FromMetadata(app.GUID, app.Name, next); err != nil {
		return p, already, mergedError(app.Name, set, next, err)
	}
	p.Annotations = map[string]*string{}
	for _, k := range append([]string{mapping.AnnTopics}, slices.Sorted(maps.Keys(set))...) {
		old, had := cur[k]
		v, keep := next[k]
		switch {
		case !keep && had:
			p.Annotations[k] = nil
		case keep && (!had || old != v):
			p.Annotations[k] = ptr(v)
		}
	}
	if app.Metadata.Labels[mapping.LabelMapped] != mapping.LabelMappedTrue {
		p.Labels = map[string]*string{mapping.LabelMapped: ptr(mapping.LabelMappedTrue)}
	}
	return p, already, nil
}

// mergedError explains a mapping made invalid by combining the flags with
// what the app already has, naming where each side comes from.
func mergedError(appName string, set, next map[string]string, err error) error {
	lo, hi := boundOf(next, mapping.AnnMin, 0), boundOf(next, mapping.AnnMax, 10)
	_, minGiven := set[mapping.AnnMin]
	_, maxGiven := set[mapping.AnnMax]
	switch {
	case lo > hi && minGiven && !maxGiven:
		return fmt.Errorf("bad --min: %d is greater than max-instances %d%s of app '%s'; set --max as well", lo, hi, defaultNote(next, mapping.AnnMax), appName)
	case lo > hi && maxGiven && !minGiven:
		return fmt.Errorf("bad --max: %d is less than min-instances %d of app '%s'; set --min as well", hi, lo, appName)
	}
	// A bad value the app already had: say which flag replaces it.
	var fix []string
	for _, f := range settingFlags {
		if _, given := set[f.ann]; !given && strings.Contains(err.Error(), strings.TrimPrefix(f.ann, "hottopic.io/")) {
			fix = append(fix, "--"+f.name)
		}
	}
	if len(fix) > 0 {
		return fmt.Errorf("app '%s': %v; give %s to replace it", appName, err, strings.Join(fix, " or "))
	}
	return fmt.Errorf("app '%s': %v", appName, err)
}

func boundOf(ann map[string]string, key string, def int) int {
	if v, ok := ann[key]; ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			return n
		}
	}
	return def
}

func defaultNote(ann map[string]string, key string) string {
	if _, ok := ann[key]; ok {
		return ""
	}
	return " (the default)"
}

// planUnmap computes the PATCH that removes topic t from app. When no topic
// is left it deletes the topics annotation, every settings annotation and
// the label, so the app is exactly as before its first map-event. The
// current list is split leniently so that a bad entry can be removed too.
func planUnmap(app *ccApp, t string) (p metadataPatch, mapped, last bool) {
	var rest []string
	for _, s := range strings.Split(app.Metadata.Annotations[mapping.AnnTopics], ",") {
		switch s = strings.TrimSpace(s); {
		case s == "":
		case s == t:
			mapped = true
		default:
			if !slices.Contains(rest, s) {
				rest = append(rest, s)
			}
		}
	}
	if !mapped {
		return p, false, false
	}
	if len(rest) > 0 {
		p.Annotations = map[string]*string{mapping.AnnTopics: ptr(strings.Join(rest, ","))}
		return p, true, false
	}
	p.Annotations = map[string]*string{mapping.AnnTopics: nil}
	for _, k := range mapping.SettingAnnotations {
		p.Annotations[k] = nil
	}
	p.Labels = map[string]*string{mapping.LabelMapped: nil}
	return p, true, true
}

func ptr(s string) *string { return &s }

// exactArgs is cobra.ExactArgs with a message naming the missing arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("%s needs %s (got %d argument%s); see '%s --help'",
				cmd.Name(), strings.Join(names, " and "), len(args), plural(len(args)), cmd.CommandPath())
		}
		return nil
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
