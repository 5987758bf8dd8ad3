// Command hottopic-scaler discovers event mappings in Cloud Controller, keeps
// JetStream streams, consumers and the mapping KV in line with them, and
// scales each mapped app by its queue length. It runs as an ordinary CF app
// (see manifest.yml at the repository root); all configuration comes from the
// environment.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

// Environment variables of the scaler itself (CF_* are read by cfplatform).
const (
	EnvPort              = "PORT"
	EnvPollInterval      = "HOTTOPIC_POLL_INTERVAL"
	EnvDiscoveryInterval = "HOTTOPIC_DISCOVERY_INTERVAL"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, log); err != nil {
		fmt.Fprintln(os.Stderr, "hottopic-scaler:", err)
		os.Exit(1)
	}
}

type settings struct {
	port      string
	poll      time.Duration
	discovery time.Duration
	cf        cfplatform.Config
	nats      cfenv.NATS
	streams   provision.StreamOptions
}

func load(getenv func(string) string) (settings, error) {
	var s settings
	var err error
	s.port = strings.TrimSpace(getenv(EnvPort))
	if s.port == "" {
		s.port = "8080"
	}
	if n, perr := parsePort(s.port); perr != nil || n == 0 {
		return s, fmt.Errorf("%s must be a TCP port number, got %q", EnvPort, s.port)
	}
	if s.poll, err = duration(getenv, EnvPollInterval, scaler.DefaultPollInterval); err != nil {
		return s, err
	}
	if s.discovery, err = duration(getenv, EnvDiscoveryInterval, scaler.DefaultDiscoveryInterval); err != nil {
		return s, err
	}
	if s.cf, err = cfplatform.FromEnv(getenv); err != nil {
		return s, err
	}
	if s.nats, err = cfenv.NATSFromEnv(cfenv.Getenv(getenv)); err != nil {
		return s, err
	}
	if s.streams, err = provision.StreamOptionsFromEnv(getenv); err != nil {
		return s, err
	}
	return s, nil
}

func parsePort(p string) (int, error) {
	var n int
	_, err := fmt.Sscanf(p, "%d", &n)
	if err != nil || n < 0 || n > 65535 || fmt.Sprint(n) != p {
		return 0, errors.New("bad port")
	}
	return n, nil
}

func duration(getenv func(string) string, key string, def time.Duration) (time.Duration, error) {
	v := strings.TrimSpace(getenv(key))
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s must be a positive Go duration such as 1s or 500ms, got %q", key, v)
	}
	return d, nil
}

func instanceID(getenv func(string) string) string {
	if g := strings.TrimSpace(getenv("CF_INSTANCE_GUID")); g != "" {
		return g
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func run(ctx context.Context, getenv func(string) string, log *slog.Logger) error {
	s, err := load(getenv)
	if err != nil {
		return err
	}
	platform, err := cfplatform.New(s.cf)
	if err != nil {
		return err
	}
	// Listen and answer first: CF's HTTP health check must pass while NATS
	// comes up, or CF would restart the scaler into a crash loop whose back-off
	// outlasts the outage.
	ln, err := net.Listen("tcp", ":"+s.port)
	if err != nil {
		return fmt.Errorf("listen on port %s: %w", s.port, err)
	}
	var handler atomic.Pointer[http.Handler]
	handler.Store(ptr(waitingHandler(s.nats.String())))
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "error", err)
		}
	}()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", "addr", ln.Addr().String())
	log.Info("connecting to NATS", "nats", s.nats.String(), "cf", s.cf.String())
	nc := connectNATS(ctx, s.nats, log)
	if nc == nil { // stopped while waiting
		log.Info("scaler stopped")
		return nil
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sc := scaler.New(js, platform,
		scaler.WithPollInterval(s.poll),
		scaler.WithDiscoveryInterval(s.discovery),
		scaler.WithLogger(log),
		scaler.WithInstanceID(instanceID(getenv)),
		scaler.WithStreamOptions(s.streams),
	)
	handler.Store(ptr(sc.Handler()))
	return sc.Run(ctx)
}

// connectNATS waits for NATS as long as it takes (saying so after 5 s, then
// each minute), or until ctx ends (nil).
func connectNATS(ctx context.Context, cfg cfenv.NATS, log *slog.Logger) *nats.Conn {
	for wait := 5 * time.Second; ; wait = time.Minute {
		cctx, cancel := context.WithTimeout(ctx, wait)
		nc, err := cfenv.Connect(cctx, cfg, "hottopic-scaler",
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("NATS disconnected", "error", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }))
		cancel()
		if err == nil {
			return nc
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("NATS unreachable; waiting for it (apps stay as they are)", "error", err)
	}
}

// waitingHandler answers while NATS is not reached yet: healthy (so CF keeps
// the scaler running), but no mappings to show.
func waitingHandler(nats string) http.Handler {
	mux := http.NewServeMux()
	write := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		write(w, http.StatusOK, map[string]any{"status": "waiting for NATS", "nats_connected": false, "leader": false})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		write(w, http.StatusServiceUnavailable, map[string]string{"error": "waiting for NATS at " + nats})
	})
	return mux
}

func ptr[T any](v T) *T { return &v }
