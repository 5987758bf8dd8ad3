// Package state is the small file a running `hottopic dev` leaves in its
// data directory so that `hottopic publish` and `hottopic events` find it.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// DefaultDir is the dev runtime's data directory, relative to the working directory.
const DefaultDir = ".hottopic"

// Where the dev runtime's embedded NATS server listens by default: the one
// definition the runtime and the CLI share.
const (
	NATSHost        = "127.0.0.1"
	DefaultNATSPort = 4222
)

// DefaultNATSURL is DefaultNATSPort on NATSHost as a client URL.
var DefaultNATSURL = fmt.Sprintf("nats://%s:%d", NATSHost, DefaultNATSPort)

const fileName = "runtime.json"

// State describes a running dev runtime.
type State struct {
	PID       int    `json:"pid"`
	NATSURL   string `json:"nats_url"`
	ScalerURL string `json:"scaler_url"`
	// Buses are the event buses the runtime made through the broker, with
	// what `hottopic publish --service` needs; none when it runs one bus
	// without a broker (--nats, --cluster).
	Buses []Bus `json:"buses,omitempty"`
}

// Bus is one event bus of a running dev runtime.
type Bus struct {
	// Service is the service instance name (the manifest's services: entry).
	Service string `json:"service"`
	// Implicit marks the bus of the apps that list no services, the one
	// `hottopic publish` uses without --service.
	Implicit bool `json:"implicit,omitempty"`
	// Apps bound to the bus, by name.
	Apps []string `json:"apps"`
	// Topics the bus takes (its apps' topics and output topics).
	Topics []string `json:"topics"`
	// Key is the bus's service key as a VCAP_SERVICES entry: publish-only
	// credentials. The file is private (mode 0600).
	Key cfenv.Service `json:"key"`
	// Admin reaches the bus as its scaler does (streams, consumers, dead
	// letters), for the CLI's operations on the dev runtime.
	Admin cfenv.Service `json:"admin"`
}

// OpsNATS is how the CLI's operations (dead letters, redrive, replay,
// purge) reach the dev runtime: its server without a broker; with one, the
// bus of app (by name; "" for the implicit bus, or the only one) with full
// rights there.
func (s State) OpsNATS(app string) (cfenv.NATS, error) {
	if len(s.Buses) == 0 {
		cfg, err := cfenv.NATSFromURL(s.NATSURL)
		cfg.Source = "the running hottopic dev"
		return cfg, err
	}
	for _, b := range s.Buses {
		if (app == "" && (b.Implicit || len(s.Buses) == 1)) || (app != "" && slices.Contains(b.Apps, app)) {
			cfg, err := cfenv.NATSFromService(b.Admin)
			cfg.Source = fmt.Sprintf("event bus %s of the running hottopic dev", b.Service)
			return cfg, err
		}
	}
	if app == "" {
		return cfenv.NATS{}, fmt.Errorf("every app of the running hottopic dev lists services, so there is no default event bus: name an app")
	}
	return cfenv.NATS{}, fmt.Errorf("app %s is not in the running hottopic dev", app)
}

// Bus finds a bus by service name; "" finds the implicit one.
func (s State) Bus(service string) (Bus, bool) {
	for _, b := range s.Buses {
		if (service == "" && b.Implicit) || (service != "" && b.Service == service) {
			return b, true
		}
	}
	return Bus{}, false
}

// Services lists the buses' service names, the implicit one last.
func (s State) Services() []string {
	var out []string
	var implicit string
	for _, b := range s.Buses {
		if b.Implicit {
			implicit = b.Service + " (implicit)"
			continue
		}
		out = append(out, b.Service)
	}
	if implicit != "" {
		out = append(out, implicit)
	}
	return out
}

// Write records s in dir (atomically).
func Write(dir string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, fileName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, fileName))
}

// Remove deletes the record (on a clean stop).
func Remove(dir string) { _ = os.Remove(filepath.Join(dir, fileName)) }

// ErrNotRunning means no live dev runtime recorded itself in the directory.
var ErrNotRunning = errors.New("no running `hottopic dev` found")

// Read returns the state of the dev runtime running from dir, or
// ErrNotRunning if there is none (no file, or its process is gone).
func Read(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(dir, fileName))
	if errors.Is(err, os.ErrNotExist) {
		return s, ErrNotRunning
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s is corrupt: %v", filepath.Join(dir, fileName), err)
	}
	if !alive(s.PID) {
		return s, ErrNotRunning
	}
	return s, nil
}
