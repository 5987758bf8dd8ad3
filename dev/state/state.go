// Package state is the small file a running `hottopic dev` leaves in its
// data directory so that `hottopic publish` and `hottopic events` find it.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// DefaultDir is the dev runtime's data directory, relative to the working directory.
const DefaultDir = ".hottopic"

// DefaultNATSURL is where the dev runtime's embedded server listens by default.
const DefaultNATSURL = "nats://127.0.0.1:4222"

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

// alive reports whether a process with that pid exists (EPERM: it does, but
// belongs to someone else).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
