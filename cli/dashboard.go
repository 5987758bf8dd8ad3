package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/scaler"
)

// newDashboardCmd opens the scaler's dashboard. For the `hottopic dev`
// runtime that is its scaler's own page. For Cloud Foundry it serves the same
// page on 127.0.0.1 and forwards the page's two API calls to the scaler with
// the user's cf token, so nothing on the foundation needs a browser login.
func newDashboardCmd(open targetOpener, standalone bool) *cobra.Command {
	var (
		scalerFlag, listen string
		noBrowser, cf      bool
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open the live dashboard: mappings, lag and instances over 15 minutes, scale decisions, dead letters",
		Long: "Open the scaler's dashboard in a browser. With a `hottopic dev` running here, that is its\n" +
			"scaler's page. For Cloud Foundry it serves the page on 127.0.0.1 and reads the scaler given\n" +
			"by --scaler or " + EnvScalerURL + " with your cf token; it runs until Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if standalone && !cf {
				if st, err := state.Read(state.DefaultDir); err == nil {
					u := strings.TrimRight(st.ScalerURL, "/") + "/"
					fmt.Fprintf(out, "Dashboard of the `hottopic dev` runtime: %s\n", u)
					if !noBrowser {
						openBrowser(u)
					}
					return nil
				}
			}
			base := scalerFlag
			if base == "" {
				base = os.Getenv(EnvScalerURL)
			}
			if base == "" {
				return errors.New("which scaler? give --scaler URL or set " + EnvScalerURL + " (the route of the hottopic-scaler app)")
			}
			if err := checkScalerURL(base); err != nil {
				return err
			}
			ctx := cmd.Context()
			t, err := open(ctx)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %v", listen, unwrapURLError(err))
			}
			if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
				_ = ln.Close()
				return fmt.Errorf("--listen %s: the dashboard carries your cf token and listens on a loopback address only", listen)
			}
			srv := &http.Server{Handler: dashboardProxy(strings.TrimRight(base, "/"), t.cc.auth, newHTTPClient(false)), ReadHeaderTimeout: 10 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			u := "http://" + ln.Addr().String() + "/"
			fmt.Fprintf(out, "Dashboard of %s %s: %s (Ctrl-C stops)\n", redactedURL(base), t.where(), u)
			if !noBrowser {
				openBrowser(u)
			}
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		},
	}
	cmd.Flags().StringVar(&scalerFlag, "scaler", "", "URL of the scaler (default $"+EnvScalerURL+")")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "where the local page listens (loopback only)")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "only print the URL")
	if standalone {
		cmd.Flags().BoolVar(&cf, "cf", false, "the Cloud Foundry scaler even when a `hottopic dev` runs here")
	}
	return cmd
}

// dashboardProxy serves the page and forwards GET /v1/dashboard and
// /v1/dead-letters to the scaler with the cf token.
func dashboardProxy(base string, auth authenticator, hc *http.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(scaler.DashboardPage())
	})
	forward := func(w http.ResponseWriter, r *http.Request) {
		u := base + r.URL.Path
		if r.URL.RawQuery != "" {
			u += "?" + url.Values(r.URL.Query()).Encode()
		}
		resp, err := scalerGet(r.Context(), hc, u, auth)
		if err != nil {
			if errors.Is(err, errNotLoggedIn) || strings.HasPrefix(err.Error(), "not logged in") {
				writeProxyError(w, http.StatusUnauthorized, err)
				return
			}
			writeProxyError(w, http.StatusBadGateway, fmt.Errorf("scaler %s unreachable: %v", redactedURL(base), err))
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}
	mux.HandleFunc("GET /v1/dashboard", forward)
	mux.HandleFunc("GET /v1/dead-letters", forward)
	return mux
}

func writeProxyError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "{\"error\": %q}\n", oneLine(err))
}

// openBrowser asks the desktop to open u; without one the printed URL does.
func openBrowser(u string) {
	var c *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		c = exec.Command("open", u)
	case "windows":
		c = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		c = exec.Command("xdg-open", u)
	}
	if c.Start() == nil {
		go func() { _ = c.Wait() }()
	}
}
