package scaler

import (
	"log/slog"
	"time"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/provision"
)

// Defaults, as docs/design.md documents them.
const (
	DefaultPollInterval      = time.Second
	DefaultDiscoveryInterval = 10 * time.Second
	DefaultLeaderTTL         = 6 * time.Second
)

// Option configures a Scaler.
type Option func(*options)

type options struct {
	poll       time.Duration
	discovery  time.Duration
	leaderTTL  time.Duration
	logger     *slog.Logger
	instanceID string
	streams    provision.StreamOptions
	now        func() time.Time
	stateKey   []byte // WithBuses: serve every bus of the broker's state
}

func newOptions(opts []Option) options {
	o := options{
		poll:       DefaultPollInterval,
		discovery:  DefaultDiscoveryInterval,
		leaderTTL:  DefaultLeaderTTL,
		logger:     slog.Default(),
		instanceID: defaultInstanceID(),
		now:        time.Now,
	}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithPollInterval sets how often lag is read (default 1s).
func WithPollInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.poll = d
		}
	}
}

// WithDiscoveryInterval sets how often the platform is asked for mapped apps (default 10s).
func WithDiscoveryInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.discovery = d
		}
	}
}

// WithLeaderTTL sets the leader key's time to live: a dead leader is replaced
// about this long after its last renewal (default 6s).
func WithLeaderTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.leaderTTL = d
		}
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithInstanceID names this scaler in the leader key and in /v1/mappings.
func WithInstanceID(id string) Option {
	return func(o *options) {
		if id != "" {
			o.instanceID = id
		}
	}
}

// WithStreamOptions shapes the streams the scaler creates.
func WithStreamOptions(so provision.StreamOptions) Option {
	return func(o *options) { o.streams = so }
}

// WithBuses serves every bus of the service broker (broker mode): the NATS
// configuration given to Service.Run is then the internal account's, where
// the broker keeps its state (internal/buses), and stateKey
// (HOTTOPIC_STATE_KEY) opens each bus's scaler credentials there. Each bus
// gets its own Scaler on its own connection (same URLs and TLS, the bus's
// credentials), fed the apps bound to it. Without it one connection is one
// bus, as without a broker.
func WithBuses(stateKey []byte) Option {
	return func(o *options) { o.stateKey = stateKey }
}

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// Environment variables of a scaler deployment (CF_* are read by cfplatform,
// the NATS service by cfenv).
const (
	EnvPollInterval      = "HOTTOPIC_POLL_INTERVAL"
	EnvDiscoveryInterval = "HOTTOPIC_DISCOVERY_INTERVAL"
)

// OptionsFromEnv reads the scaler's intervals and the shape of the streams it
// creates from the environment.
func OptionsFromEnv(getenv func(string) string) ([]Option, error) {
	poll, err := cfenv.Duration(getenv, EnvPollInterval, DefaultPollInterval)
	if err != nil {
		return nil, err
	}
	discovery, err := cfenv.Duration(getenv, EnvDiscoveryInterval, DefaultDiscoveryInterval)
	if err != nil {
		return nil, err
	}
	streams, err := provision.StreamOptionsFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	return []Option{WithPollInterval(poll), WithDiscoveryInterval(discovery), WithStreamOptions(streams)}, nil
}
