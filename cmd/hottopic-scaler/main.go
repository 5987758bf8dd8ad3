// Command hottopic-scaler discovers event mappings in Cloud Controller, keeps
// JetStream streams, consumers and the mapping KV in line with them, and
// scales each mapped app by its queue length. It runs as an ordinary CF app
// (see manifest.yml at the repository root); all configuration comes from the
// environment.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

// EnvPort is the port of the scaler's HTTP API (CF sets it).
const EnvPort = "PORT"

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
	port                     int
	cf                       cfplatform.Config
	nats                     cfenv.NATS
	opts                     []scaler.Option
	scrapeUser, scrapeSecret string
	buses                    bool // broker mode
}

func load(getenv func(string) string) (settings, error) {
	var s settings
	var err error
	if s.port, err = cfenv.Port(getenv, EnvPort, 8080); err != nil {
		return s, err
	}
	if s.opts, err = scaler.OptionsFromEnv(getenv); err != nil {
		return s, err
	}
	if s.cf, err = cfplatform.FromEnv(getenv); err != nil {
		return s, err
	}
	if s.nats, err = cfenv.NATSFromEnv(cfenv.Getenv(getenv)); err != nil {
		return s, err
	}
	if s.scrapeUser, s.scrapeSecret, err = scaler.ScrapeFromEnv(getenv); err != nil {
		return s, err
	}
	// Broker mode: scaler.env of hottopic-broker init reaches the broker's
	// state; the scaler then serves every bus found there.
	access, ok, err := buses.AccessFromEnv(getenv)
	if err != nil || !ok {
		return s, err
	}
	user, err := access.UserOption("hottopic-scaler")
	if err != nil {
		return s, fmt.Errorf("%s: %w", buses.EnvInternalAccountKey, err)
	}
	s.nats.Options = append(s.nats.Options, user)
	s.opts = append(s.opts, scaler.WithBuses(access.StateKey))
	s.buses = true
	return s, nil
}

func instanceID(getenv func(string) string) string {
	if g := strings.TrimSpace(getenv("CF_INSTANCE_GUID")); g != "" {
		return g
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func metricsNote(user string) string {
	if user == "" {
		return "off (no " + scaler.EnvMetricsUser + ")"
	}
	return "HTTP basic auth as " + user
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
	// Callers prove who they are with their Cloud Foundry token; Prometheus
	// with the scrape credential.
	access := scaler.Access{Tokens: cfplatform.NewTokens(s.cf), ScrapeUser: s.scrapeUser, ScrapePassword: s.scrapeSecret}
	svc, err := scaler.Listen(":"+strconv.Itoa(s.port), log, access)
	if err != nil {
		return err
	}
	log.Info("listening", "addr", svc.Addr().String(), "metrics", metricsNote(s.scrapeUser))
	log.Info("connecting to NATS", "nats", s.nats.String(), "cf", s.cf.String(), "service_broker_buses", s.buses)
	return svc.Run(ctx, s.nats, platform, append(s.opts, scaler.WithInstanceID(instanceID(getenv)))...)
}
