// Package sidecar is hottopic-sidecar: it runs beside every app instance,
// pulls the app's events from JetStream and POSTs each one to the app over
// local HTTP, acking only after a 2xx (at least once). It also serves a small
// API for the app: POST /publish/<topic>, GET /healthz, GET /metrics.
//
// Both the hottopic-sidecar binary and the hidden `hottopic sidecar` command
// run Main.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// apiReadTimeout bounds how long the API waits for a request, headers and
// body (at most the NATS payload limit, over loopback).
const apiReadTimeout = 10 * time.Second

// Main runs the sidecar until ctx is cancelled (SIGTERM), then shuts down
// gracefully. It returns the process exit code: 0 after a clean shutdown, 1
// when the sidecar cannot run (the reason is logged as one line).
func Main(ctx context.Context, getenv func(string) string, stdout io.Writer) int {
	log := slog.New(slog.NewTextHandler(stdout, nil))
	if err := run(ctx, getenv, log); err != nil {
		log.Error(err.Error())
		return 1
	}
	return 0
}

func run(ctx context.Context, getenv func(string) string, log *slog.Logger) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return err
	}
	mode := "mapped"
	if cfg.Static != nil {
		mode = "static"
	}
	log.Info("starting hottopic-sidecar", "app", cfg.App.Name, "app_guid", cfg.App.ID, "instance", cfg.App.InstanceIndex,
		"mode", mode, "nats", cfg.NATS.String(), "app_port", cfg.AppPort, "listen", cfg.Listen)

	var r *runner // set below; the reconnect handler needs it
	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	nc, err := cfenv.Connect(cctx, cfg.NATS, "hottopic-sidecar/"+cfg.App.Name+"/"+strconv.Itoa(cfg.App.InstanceIndex),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted())
			if r != nil {
				r.reset()
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error", "error", err)
		}),
	)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before we ever connected
		}
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("JetStream: %w", err)
	}

	m := newMetrics()
	e := newEngine(log, m, js, cfg.App.ID, cfg.AppPort, cfg.Streams)
	r = newRunner(log, nc, js, e, cfg.App.ID)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("%s: cannot listen on %s: %v", EnvListen, cfg.Listen, unwrapOpError(err))
	}
	a := &api{log: log, nc: nc, js: js, m: m, known: e.outputs, mode: mode, topics: r.topicNames}
	// A request must arrive whole, body too, within apiReadTimeout: a
	// client that stalls cannot hold a connection (and its goroutine).
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: apiReadTimeout, ReadTimeout: apiReadTimeout, IdleTimeout: 60 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("sidecar API stopped", "error", err)
		}
	}()
	defer srv.Close()

	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("%s: cannot listen on %s: %v", EnvMetricsListen, cfg.MetricsListen, unwrapOpError(err))
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := msrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener stopped", "error", err)
			}
		}()
		defer msrv.Close()
		log.Info("serving metrics", "listen", mln.Addr().String())
	}

	if cfg.Static != nil {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := provisionStatic(pctx, js, cfg.Static, cfg.Streams)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("static mode (%s): %v", "HOTTOPIC_TOPICS", err)
		}
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	if waitForApp(ctx, cfg.AppPort, log) {
		go r.tickLoop(runCtx)
		if cfg.Static != nil {
			log.Info("static mode", "topics", strings.Join(cfg.Static.Topics, ","), "concurrency", cfg.Static.Concurrency,
				"path", cfg.Static.Path, "timeout_seconds", cfg.Static.TimeoutSeconds, "max_deliver", cfg.Static.MaxDeliver)
			r.apply(runCtx, cfg.Static)
		} else {
			go r.watchMapping(runCtx)
		}
		<-ctx.Done()
	}
	shutdown(log, r, e, runCtx, stopRun)
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		log.Warn("could not flush the last acks to NATS", "error", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	log.Info("stopped")
	return nil
}

// shutdown stops pulling at once, lets in-flight deliveries finish within
// ShutdownGrace, and naks whatever is left so another instance gets it now.
func shutdown(log *slog.Logger, r *runner, e *engine, runCtx context.Context, stopRun context.CancelFunc) {
	ps := r.pullers()
	r.apply(runCtx, nil)
	stopRun()
	// held counts an undrained puller too: messages may still reach it, to be nak'd.
	held := func() int {
		n := 0
		for _, p := range ps {
			n += p.Held()
			if !p.Drained() {
				n++
			}
		}
		return n
	}
	events := func() int {
		n := 0
		for _, p := range ps {
			n += p.Held()
		}
		return n
	}
	log.Info("shutting down: stopped pulling", "in_flight", events())
	waitHeld := func(d time.Duration) bool {
		deadline := time.Now().Add(d)
		for held() > 0 {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(10 * time.Millisecond)
		}
		return true
	}
	if !waitHeld(ShutdownGrace) {
		log.Warn("grace period over; releasing unfinished deliveries to other instances", "in_flight", events())
		e.releasing.Store(true)
		e.abort()
		waitHeld(500 * time.Millisecond)
	}
	r.wg.Wait()
	e.stop()
}

// waitForApp blocks until the app accepts TCP connections (true) or ctx ends.
func waitForApp(ctx context.Context, port int, log *slog.Logger) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waited := false
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			if waited {
				log.Info("app is accepting connections; pulling events", "address", addr)
			}
			return true
		}
		if !waited {
			log.Info("waiting for the app to accept connections before pulling events", "address", addr)
			waited = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
