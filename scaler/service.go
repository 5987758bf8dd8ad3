package scaler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// Service is one scaler deployment, the same in cmd/hottopic-scaler and in
// `hottopic dev`: its HTTP API, which answers from the moment it listens (so
// a platform's health check passes while NATS is still unreachable, instead
// of restarting the scaler into a crash loop whose back-off outlasts the
// outage), then the Scaler once NATS is reached.
type Service struct {
	ln      net.Listener
	srv     *http.Server
	handler atomic.Pointer[http.Handler]
	log     *slog.Logger
}

// Listen starts the API on addr ("host:port"; port 0 picks a free one),
// behind access. Until Run reaches NATS it answers /healthz with "waiting
// for NATS" and everything else with 503.
func Listen(addr string, log *slog.Logger, access Access) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("scaler API: listen on %s: %w", addr, err)
	}
	if err := access.checkAddr(ln.Addr()); err != nil {
		_ = ln.Close()
		return nil, err
	}
	s := &Service{ln: ln, log: log}
	s.setHandler(waitingHandler(""))
	s.srv = &http.Server{
		Handler:           access.Protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s.handler.Load()).ServeHTTP(w, r) })),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "error", err)
		}
	}()
	return s, nil
}

// Addr is where the API listens.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// URL is the API's base URL (http://host:port).
func (s *Service) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the API at once (for a Service whose Run never started).
func (s *Service) Close() { _ = s.srv.Close() }

func (s *Service) setHandler(h http.Handler) { s.handler.Store(&h) }

// Run connects to NATS (waiting as long as it takes), then runs a Scaler on
// platform p with opts and serves its API until ctx ends; then the API shuts
// down. A ctx that ends while NATS is still awaited is not an error. With
// WithBuses, cfg reaches the broker's internal account and Run serves every
// bus of the broker (fleet.go).
func (s *Service) Run(ctx context.Context, cfg cfenv.NATS, p Platform, opts ...Option) error {
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	s.setHandler(waitingHandler(cfg.String()))
	nc := s.connect(ctx, cfg)
	if nc == nil { // stopped while waiting
		s.log.Info("scaler stopped")
		return nil
	}
	defer nc.Close()
	if o := newOptions(opts); o.stateKey != nil {
		f := newFleet(nc, cfg, p, append([]Option{WithLogger(s.log)}, opts...))
		s.setHandler(apiHandler(f))
		return f.run(ctx)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sc := New(js, p, append([]Option{WithLogger(s.log)}, opts...)...)
	s.setHandler(sc.Handler())
	return sc.Run(ctx)
}

// connect waits for NATS as long as it takes (saying so after 5 s, then
// each minute), or until ctx ends (nil).
func (s *Service) connect(ctx context.Context, cfg cfenv.NATS) *nats.Conn {
	for wait := 5 * time.Second; ; wait = time.Minute {
		cctx, cancel := context.WithTimeout(ctx, wait)
		nc, err := cfenv.Connect(cctx, cfg, "hottopic-scaler",
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					s.log.Warn("NATS disconnected", "error", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) { s.log.Info("NATS reconnected") }))
		cancel()
		if err == nil {
			return nc
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("NATS unreachable; waiting for it (apps stay as they are)", "error", err)
	}
}

// waitingHandler answers while NATS is not reached yet: healthy (so the
// platform keeps the scaler running), but no mappings to show.
func waitingHandler(nats string) http.Handler {
	msg := "waiting for NATS"
	if nats != "" {
		msg += " at " + nats
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "waiting for NATS", "nats_connected": false, "leader": false})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": msg})
	})
	return mux
}
