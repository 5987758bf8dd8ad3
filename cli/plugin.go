package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"code.cloudfoundry.org/cli/v8/plugin"
	"github.com/spf13/cobra"
)

// PluginName is how `cf plugins` lists Hot Topic.
const PluginName = "hottopic"

// pluginEventsCommand is `events` under cf: `cf events` is a native cf
// command (recent app events) and cf refuses plugins that shadow one.
const pluginEventsCommand = "event-mappings"

// IsPluginCall reports whether the cf CLI started this binary as its plugin:
// cf runs `BINARY RPC-PORT COMMAND ARGS…` (and `BINARY RPC-PORT SendMetadata`
// on install). No hottopic command is a number, so this cannot shadow one.
func IsPluginCall(args []string) bool {
	if len(args) < 3 {
		return false
	}
	port, err := strconv.Atoi(args[1])
	return err == nil && port > 0 && port < 65536
}

// RunPlugin serves one call from the cf CLI (it reads os.Args, as the plugin
// library does) and returns the exit code; a non-zero code makes cf exit 1.
func RunPlugin() int {
	p := &cfPlugin{}
	plugin.Start(p)
	return p.code
}

type cfPlugin struct{ code int }

func (p *cfPlugin) Run(conn plugin.CliConnection, args []string) {
	if len(args) == 0 || args[0] == "CLI-MESSAGE-UNINSTALL" {
		return // nothing installed beside the binary, nothing to clean up
	}
	root := &cobra.Command{Use: "cf", SilenceUsage: true, SilenceErrors: true}
	for _, c := range cfCommands(openPlugin(conn), false) {
		switch c.Name() {
		case "events":
			c.Use = pluginEventsCommand + " [APP]"
			c.Aliases = nil
		case "redrive":
			c.Use = pluginRedriveCommand + " APP"
			c.Aliases = nil
		}
		root.AddCommand(c)
	}
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", oneLine(err))
		p.code = 1
	}
}

func (p *cfPlugin) GetMetadata() plugin.PluginMetadata {
	flags := map[string]string{}
	for _, f := range settingFlags {
		flags[f.name] = f.usage
	}
	md := plugin.PluginMetadata{
		Name:    PluginName,
		Version: pluginVersion(Version),
		Commands: []plugin.Command{
			{
				Name:     "map-event",
				HelpText: "Map a topic to an app: its events are delivered to the app, which is scaled by queue length",
				UsageDetails: plugin.Usage{
					Usage:   "cf map-event APP_NAME TOPIC [--min N] [--max N] [--lag-per-instance N] [--idle-seconds N] [--concurrency N] [--path P] [--timeout-seconds N] [--max-deliver N] [--output-topic T]",
					Options: flags,
				},
			},
			{
				Name:         "unmap-event",
				HelpText:     "Unmap a topic from an app",
				UsageDetails: plugin.Usage{Usage: "cf unmap-event APP_NAME TOPIC"},
			},
			{
				Name:     pluginEventsCommand,
				HelpText: "List the event mappings of the targeted space, with live lag and instances from the scaler",
				UsageDetails: plugin.Usage{
					Usage: "cf " + pluginEventsCommand + " [APP_NAME] [--scaler URL] [--json]",
					Options: map[string]string{
						"scaler": "URL of the scaler for live lag and instances (default $" + EnvScalerURL + ")",
						"json":   "print JSON for scripts",
					},
				},
			},
		},
	}
	md.Commands = append(md.Commands, opsPluginCommands()...)
	md.Commands = append(md.Commands, replayPluginCommand(), plugin.Command{
		Name:     "dashboard",
		HelpText: "Open the live dashboard of the scaler: lag and instances over 15 minutes, scale decisions, dead letters",
		UsageDetails: plugin.Usage{
			Usage:   "cf dashboard [--scaler URL] [--listen 127.0.0.1:PORT] [--no-browser]",
			Options: map[string]string{"scaler": "URL of the scaler (default $" + EnvScalerURL + ")", "listen": "where the local page listens", "no-browser": "only print the URL"},
		},
	})
	return md
}

// pluginVersion turns "v1.2.3" (or "dev") into cf's version triple.
func pluginVersion(v string) plugin.VersionType {
	var n [3]int
	for i, part := range strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3) {
		if j := strings.IndexFunc(part, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			part = part[:j]
		}
		n[i], _ = strconv.Atoi(part)
	}
	return plugin.VersionType{Major: n[0], Minor: n[1], Build: n[2]}
}

// openPlugin takes the API endpoint, target and token from the cf CLI that
// runs the plugin. Apps are still resolved through /v3 by ccClient: the RPC's
// GetApp and CliCommand("app") go through the legacy /v2 API.
func openPlugin(conn plugin.CliConnection) targetOpener {
	return func(ctx context.Context) (*cfTarget, error) {
		api, err := conn.ApiEndpoint()
		if err != nil {
			return nil, fmt.Errorf("asking cf for the API endpoint: %v", err)
		}
		if api == "" {
			return nil, errors.New("no API endpoint set: use 'cf api URL' and 'cf login' first")
		}
		if ok, err := conn.IsLoggedIn(); err != nil || !ok {
			return nil, errors.New("not logged in: use 'cf login' first")
		}
		space, err := conn.GetCurrentSpace()
		if err != nil || space.Guid == "" {
			return nil, errors.New("no space targeted: use 'cf target -o ORG -s SPACE' first")
		}
		org, _ := conn.GetCurrentOrg()
		skip, _ := conn.IsSSLDisabled()
		auth := &pluginAuth{conn: conn}
		tok, err := auth.token(ctx)
		if err != nil {
			return nil, err
		}
		user, _ := conn.Username()
		if user == "" {
			user = tokenUser(tok)
		}
		return &cfTarget{
			cc:    &ccClient{api: strings.TrimRight(api, "/"), hc: newHTTPClient(skip), auth: auth},
			org:   org.Name,
			space: space.Name, spaceGUID: space.Guid,
			user: user,
		}, nil
	}
}

// pluginAuth asks cf for the token; cf refreshes it when it is about to
// expire and stores the result, so there is nothing more to do after a 401.
type pluginAuth struct{ conn plugin.CliConnection }

func (a *pluginAuth) token(context.Context) (string, error) {
	tok, err := a.conn.AccessToken()
	if err != nil {
		return "", fmt.Errorf("not logged in: cf could not provide a token (%v); use 'cf login'", oneLine(err))
	}
	if strings.TrimSpace(tok) == "" {
		return "", errors.New("not logged in: use 'cf login' first")
	}
	return tok, nil
}

func (a *pluginAuth) refresh(context.Context) (string, error) {
	return "", fmt.Errorf("%w: Cloud Controller refused the cf CLI token; use 'cf login'", errNotLoggedIn)
}

// oneLine keeps an error on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
