// Package state is the small file a running `hottopic dev` leaves in its
// data directory so that `hottopic publish` and `hottopic events` find it.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
