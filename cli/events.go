package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler/api"
)

// EnvScalerURL names the scaler whose /v1/mappings gives `events` its live
// lag and instance columns.
const EnvScalerURL = "HOTTOPIC_SCALER_URL"

// notSeen marks a mapped app the scaler does not report (yet).
const notSeen = "not yet seen by the scaler"

// scalerTimeout bounds the live-data request: the table must not hang on a
// scaler that is down.
const scalerTimeout = 5 * time.Second

// eventsJSON is what `events --json` prints: the scaler's mapping schema,
// filled from Cloud Controller metadata and, when reachable, the scaler.
type eventsJSON struct {
	Source    string        `json:"source"` // "cf" or "dev"
	Org       string        `json:"org,omitempty"`
	Space     string        `json:"space,omitempty"`
	ScalerURL string        `json:"scaler_url,omitempty"`
	Live      bool          `json:"live"`
	LiveError string        `json:"live_error,omitempty"`
	Mappings  []api.Mapping `json:"mappings"`
}

// newEventsCmd lists mappings. standalone adds the dev-runtime rule: unless
// --cf is given, a `hottopic dev` running in the current directory is what
// `events` shows (as a cf plugin the user is always targeting CF).
func newEventsCmd(open targetOpener, standalone bool) *cobra.Command {
	var (
		scalerFlag   string
		asJSON       bool
		forceDev, cf bool
		dataDir      string
	)
	cmd := &cobra.Command{
		Use:   "events [APP]",
		Short: "List the event mappings of the targeted space, with live lag and instances from the scaler",
		Long: "List the apps of the targeted space that have event mappings: topics, their JetStream\n" +
			"streams, min/max instances and lag per instance. With a reachable scaler (--scaler URL or\n" +
			EnvScalerURL + ") it adds the live lag and instances (current/desired); the scaler gets your\n" +
			"cf token and shows the apps that token may see.",
		Aliases: []string{"event-mappings"},
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var appName string
			if len(args) == 1 {
				appName = args[0]
			}
			if standalone && !cf {
				st, err := state.Read(dataDir)
				if err == nil {
					return devEvents(cmd.Context(), cmd.OutOrStdout(), st.ScalerURL, appName, asJSON)
				}
				if forceDev {
					return fmt.Errorf("--dev: %v in %s", err, dataDir)
				}
				if cmd.Flags().Changed("data-dir") {
					return fmt.Errorf("--data-dir: %v in %s", err, dataDir)
				}
			}
			scaler := scalerFlag
			if scaler == "" {
				scaler = os.Getenv(EnvScalerURL)
			}
			if scaler != "" {
				if err := checkScalerURL(scaler); err != nil {
					return err
				}
			}
			return cfEvents(cmd.Context(), cmd.OutOrStdout(), open, scaler, appName, asJSON)
		},
	}
	cmd.Flags().StringVar(&scalerFlag, "scaler", "", "URL of the scaler for live lag and instances (default $"+EnvScalerURL+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (the scaler's /v1/mappings schema) for scripts")
	if standalone {
		// No backquotes in these usages: pflag shows a backquoted word as the
		// flag's value name ("--dev hottopic dev"), as if the flag took one.
		cmd.Flags().BoolVar(&forceDev, "dev", false, "show the local runtime of 'hottopic dev' (found through --data-dir); the default when one runs")
		cmd.Flags().BoolVar(&cf, "cf", false, "show the targeted Cloud Foundry space even when 'hottopic dev' runs here")
		cmd.Flags().StringVar(&dataDir, "data-dir", state.DefaultDir, "the --data-dir of the 'hottopic dev' runtime to show")
		cmd.MarkFlagsMutuallyExclusive("dev", "cf")
		cmd.MarkFlagsMutuallyExclusive("data-dir", "cf")
	}
	return cmd
}

func checkScalerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bad scaler URL %q: want http(s)://HOST[:PORT]", redactedURL(s))
	}
	return nil
}

func cfEvents(ctx context.Context, out io.Writer, open targetOpener, scalerURL, appName string, asJSON bool) error {
	t, err := open(ctx)
	if err != nil {
		return err
	}
	if !asJSON {
		fmt.Fprintf(out, "Getting event mappings %s...\n\n", t.where())
	}
	var apps []ccApp
	if appName != "" {
		app, err := resolveApp(ctx, t, appName)
		if err != nil {
			return err
		}
		if mapping.IsMapped(app.Metadata.Labels) {
			apps = append(apps, *app)
		}
	} else if apps, err = t.cc.mappedApps(ctx, t.spaceGUID); err != nil {
		return ccFailure("list the mapped apps", err)
	}
	rows := make([]api.Mapping, 0, len(apps))
	for _, a := range apps {
		rows = append(rows, fromCC(a))
	}
	res := eventsJSON{Source: "cf", Org: t.org, Space: t.space, ScalerURL: redactedURL(scalerURL), Mappings: rows}
	var liveErr error
	if scalerURL != "" {
		live, err := fetchScaler(ctx, scalerURL, t.cc.auth)
		if err != nil {
			liveErr = fmt.Errorf("scaler at %s unreachable (%v): no live lag and instances shown", redactedURL(scalerURL), err)
			res.LiveError = liveErr.Error()
		} else {
			res.Live = true
			mergeLive(rows, live)
		}
	}
	if asJSON {
		if err := writeJSON(out, res); err != nil {
			return err
		}
		return liveErr
	}
	switch {
	case len(rows) == 0 && appName != "":
		fmt.Fprintf(out, "App %s has no event mappings.\n", appName)
	case len(rows) == 0:
		fmt.Fprintln(out, "No event mappings found.")
	default:
		writeTable(out, rows, res.Live)
	}
	if scalerURL == "" {
		fmt.Fprintf(out, "\nLive lag and instances: pass --scaler URL or set %s.\n", EnvScalerURL)
	}
	return liveErr
}

// devEvents shows the mappings of the `hottopic dev` runtime, all live.
func devEvents(ctx context.Context, out io.Writer, scalerURL, appName string, asJSON bool) error {
	live, err := fetchScaler(ctx, scalerURL, nil)
	if err != nil {
		return fmt.Errorf("the `hottopic dev` scaler at %s is unreachable: %v", scalerURL, err)
	}
	rows := make([]api.Mapping, 0, len(live.Mappings))
	for _, m := range live.Mappings {
		if appName == "" || m.AppName == appName {
			rows = append(rows, m)
		}
	}
	if asJSON {
		return writeJSON(out, eventsJSON{Source: "dev", ScalerURL: scalerURL, Live: true, Mappings: rows})
	}
	fmt.Fprintf(out, "Getting event mappings of the `hottopic dev` runtime (scaler %s)...\n\n", scalerURL)
	switch {
	case len(rows) == 0 && appName != "":
		return fmt.Errorf("app '%s' has no event mappings in the `hottopic dev` runtime", appName)
	case len(rows) == 0:
		fmt.Fprintln(out, "No event mappings found.")
	default:
		writeTable(out, rows, true)
	}
	return nil
}

// fromCC resolves an app's metadata as the scaler does; an invalid mapping
// is kept, with the reason, so the user sees what to fix.
func fromCC(a ccApp) api.Mapping {
	m, err := mapping.FromMetadata(a.GUID, a.Name, a.Metadata.Annotations)
	row := api.Mapping{App: a.Name, AppGUID: a.GUID, AppName: a.Name, Errors: []string{}, Topics: m.Topics, Settings: m.Settings, Valid: err == nil}
	if err != nil {
		row.Error = err.Error()
		row.Topics = nil
		for _, s := range strings.Split(a.Metadata.Annotations[mapping.AnnTopics], ",") {
			if s = strings.TrimSpace(s); s != "" {
				row.Topics = append(row.Topics, s)
			}
		}
	}
	row.Streams = map[string]string{}
	for _, t := range row.Topics {
		if topic.Validate(t) == nil {
			row.Streams[t] = topic.StreamName(t)
		}
	}
	return row
}

// mergeLive copies the scaler's live view into the rows, by app GUID.
func mergeLive(rows []api.Mapping, live *api.Mappings) {
	byGUID := map[string]api.Mapping{}
	for _, m := range live.Mappings {
		byGUID[m.AppGUID] = m
	}
	for i := range rows {
		m, ok := byGUID[rows[i].AppGUID]
		if !ok {
			rows[i].Errors = append(rows[i].Errors, notSeen)
			continue
		}
		rows[i].Bus = m.Bus
		if !m.Valid && rows[i].Valid {
			// The scaler knows more than the annotations: with a service
			// broker, a mapped app bound to no bus is invalid.
			rows[i].Valid, rows[i].Error = false, m.Error
		}
		rows[i].Lag, rows[i].LagKnown = m.Lag, m.LagKnown
		rows[i].CurrentInstances, rows[i].DesiredInstances = m.CurrentInstances, m.DesiredInstances
		rows[i].LastScaleTime, rows[i].LastScaleReason = m.LastScaleTime, m.LastScaleReason
		rows[i].Errors = append(rows[i].Errors, m.Errors...)
	}
}

// fetchScaler reads the scaler's mappings. On Cloud Foundry auth gives the
// cf CLI's token (refreshed once after a 401); the `hottopic dev` scaler
// takes none (auth nil).
func fetchScaler(ctx context.Context, base string, auth authenticator) (*api.Mappings, error) {
	ctx, cancel := context.WithTimeout(ctx, scalerTimeout)
	defer cancel()
	resp, err := scalerGet(ctx, http.DefaultClient, strings.TrimRight(base, "/")+api.Path, auth)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %s%s", api.Path, resp.Status, scalerReason(resp))
	}
	var m api.Mappings
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("GET %s: unreadable answer: %v", api.Path, err)
	}
	return &m, nil
}

// writeTable prints an aligned table in the cf CLI's style.
func writeTable(out io.Writer, rows []api.Mapping, live bool) {
	tw := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	head := []string{"name", "topics", "streams"}
	// With a service broker each app's bus, as the scaler found it.
	buses := slices.ContainsFunc(rows, func(m api.Mapping) bool { return m.Bus != "" })
	if buses {
		head = append(head, "bus")
	}
	if live {
		head = append(head, "lag", "instances")
	}
	head = append(head, "min/max", "lag-per-instance", "status")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, m := range rows {
		streams := make([]string, 0, len(m.Topics))
		for _, t := range m.Topics {
			if s := m.Streams[t]; s != "" {
				streams = append(streams, s)
			}
		}
		cols := []string{m.AppName, orDash(strings.Join(m.Topics, ",")), orDash(strings.Join(streams, ","))}
		if buses {
			cols = append(cols, orDash(m.Bus))
		}
		if live {
			lag, inst := "-", "-"
			if seenByScaler(m) {
				lag = "?"
				if m.LagKnown {
					lag = strconv.FormatInt(m.Lag, 10)
				}
				inst = count(m.CurrentInstances) + "/" + count(m.DesiredInstances)
			}
			cols = append(cols, lag, inst)
		}
		bounds, per := "-", "-"
		if m.Valid {
			bounds = fmt.Sprintf("%d/%d", m.Settings.MinInstances, m.Settings.MaxInstances)
			per = strconv.Itoa(m.Settings.LagPerInstance)
		}
		cols = append(cols, bounds, per, status(m, live))
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	tw.Flush()
}

func seenByScaler(m api.Mapping) bool {
	for _, e := range m.Errors {
		if e == notSeen {
			return false
		}
	}
	return true
}

func status(m api.Mapping, live bool) string {
	switch {
	case !m.Valid:
		return "invalid: " + m.Error
	case len(m.Errors) > 0:
		return m.Errors[len(m.Errors)-1]
	case live && !m.LagKnown:
		return "lag unknown"
	}
	return "ok"
}

// count is an instance count for the table: "?" when not known.
func count(n *int) string {
	if n == nil {
		return "?"
	}
	return strconv.Itoa(*n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// redactedURL hides a password in a URL before it is printed.
func redactedURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}

// scalerGet GETs a scaler API URL with the cf token (none when auth is
// nil); after a 401 it refreshes the token once and asks again.
func scalerGet(ctx context.Context, hc *http.Client, u string, auth authenticator) (*http.Response, error) {
	send := func(tok string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, unwrapURLError(err)
		}
		return resp, nil
	}
	if auth == nil {
		return send("")
	}
	tok, err := auth.token(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := send(tok)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	fresh, err := auth.refresh(ctx)
	if err != nil || fresh == tok {
		return resp, nil // the scaler's own answer says why
	}
	drain(resp)
	return send(fresh)
}

// scalerReason is ": " and the scaler's one-line JSON error, if it sent one.
func scalerReason(resp *http.Response) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) != nil || e.Error == "" {
		return ""
	}
	return ": " + e.Error
}
