package sidecar

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// Environment variables read by the sidecar beyond the CF ones.
const (
	EnvListen = "HOTTOPIC_LISTEN"
	// EnvMetricsListen, when set, adds a listener that serves GET /metrics
	// only: for a scraper outside the container (CF's Metric Registrar with
	// --internal-port) without exposing the publish API beyond loopback.
	EnvMetricsListen = "HOTTOPIC_METRICS_LISTEN"
	// EnvConnectTimeout bounds the first NATS connection (Go duration).
	EnvConnectTimeout = "HOTTOPIC_NATS_CONNECT_TIMEOUT"

	DefaultListen         = "127.0.0.1:8383"
	DefaultConnectTimeout = 30 * time.Second
	// ShutdownGrace is how long in-flight deliveries may finish after SIGTERM:
	// inside CF's 10 s, with room to nak the rest and flush.
	ShutdownGrace = 9 * time.Second
)

// Config is everything the sidecar reads from its environment.
type Config struct {
	AppPort        int
	App            cfenv.Application
	NATS           cfenv.NATS
	Static         *mapping.Mapping // nil: follow the KV mapping
	Listen         string
	MetricsListen  string // "" when not set
	Streams        provision.StreamOptions
	ConnectTimeout time.Duration
}

// LoadConfig reads and checks the environment. Errors are one line naming
// the variable and never echo a credential.
func LoadConfig(getenv func(string) string) (Config, error) {
	var c Config
	var err error
	if strings.TrimSpace(getenv("PORT")) == "" {
		return c, fmt.Errorf("PORT is not set: the sidecar delivers events to the app on 127.0.0.1:$PORT")
	}
	if c.AppPort, err = cfenv.Port(getenv, "PORT", 0); err != nil {
		return c, err
	}

	if c.App, err = cfenv.App(getenv); err != nil {
		return c, err
	}
	if strings.TrimSpace(getenv("VCAP_APPLICATION")) == "" {
		return c, fmt.Errorf("VCAP_APPLICATION is not set: the sidecar needs the app GUID (application_id) to name its consumers")
	}
	if err := topic.ValidConsumerName(c.App.ID); err != nil {
		return c, fmt.Errorf("VCAP_APPLICATION application_id: %w", err)
	}

	if c.NATS, err = cfenv.NATSFromEnv(getenv); err != nil {
		return c, err
	}

	m, static, err := mapping.FromEnv(c.App.ID, c.App.Name, getenv)
	if err != nil {
		return c, err
	}
	if static {
		c.Static = &m
	}

	c.Listen = strings.TrimSpace(getenv(EnvListen))
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if err := checkListen(EnvListen, c.Listen); err != nil {
		return c, err
	}
	if c.MetricsListen = strings.TrimSpace(getenv(EnvMetricsListen)); c.MetricsListen != "" {
		if err := checkListen(EnvMetricsListen, c.MetricsListen); err != nil {
			return c, err
		}
	}

	if c.Streams, err = provision.StreamOptionsFromEnv(getenv); err != nil {
		return c, err
	}

	if c.ConnectTimeout, err = cfenv.Duration(getenv, EnvConnectTimeout, DefaultConnectTimeout); err != nil {
		return c, err
	}
	return c, nil
}

// window is how many events one topic may hold: as many as there are
// workers, and no more. An event the sidecar holds is one a worker is
// taking: nothing waits in hand, so a stop has nothing to give back that
// the app never saw (JetStream counts every delivery, a nak'd one too, so
// a prefetched event given back would cost an attempt; with max-deliver 1
// it would be dead-lettered unseen).
func window(concurrency int) int { return concurrency }

// checkListen checks a host:port listen address read from variable env.
func checkListen(env, addr string) error {
	host, lport, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s must be host:port, got %q", env, addr)
	}
	if _, err := cfenv.ParsePort(env+" port", lport, 0); err != nil {
		return err
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%s host must be an IP address or localhost, got %q", env, host)
	}
	return nil
}
