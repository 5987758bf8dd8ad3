package broker

// A directory written by Init, read back: how `hottopic dev` runs the same
// operator-mode server and broker as a foundation, with keys and accounts
// kept in its data directory across restarts.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-envparse"

	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// Setup is an initialised directory: the server configuration's path and
// the broker's and scaler's environment as Init wrote them.
type Setup struct {
	Dir        string
	ServerConf string
	BrokerEnv  map[string]string
	ScalerEnv  map[string]string
}

// EnsureInit runs Init in dir unless dir already holds its server
// configuration, and reads the directory back: the second run of a local
// runtime finds the keys, accounts and state of the first.
func EnsureInit(dir string, o InitOptions) (*Setup, error) {
	conf := filepath.Join(dir, ServerConfFile)
	if _, err := os.Stat(conf); errors.Is(err, fs.ErrNotExist) {
		if err := Init(dir, o); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	s := &Setup{Dir: dir, ServerConf: conf}
	var err error
	if s.BrokerEnv, err = ReadEnvFile(filepath.Join(dir, BrokerEnvFile)); err != nil {
		return nil, err
	}
	if s.ScalerEnv, err = ReadEnvFile(filepath.Join(dir, ScalerEnvFile)); err != nil {
		return nil, err
	}
	return s, nil
}

// ReadEnvFile reads a KEY=VALUE file init wrote (broker.env, scaler.env).
func ReadEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is missing beside %s: remove the directory to start afresh", path, ServerConfFile)
		}
		return nil, err
	}
	defer f.Close()
	env, err := envparse.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return env, nil
}

// BrokerConfig is the broker's configuration from the directory, reaching
// NATS at natsURL (the address the server was started on, which may differ
// from the one written at init).
func (s *Setup) BrokerConfig(natsURL string) (Config, error) {
	return ConfigFromEnv(func(k string) string {
		if k == cfenv.EnvNATSURL {
			return natsURL
		}
		return s.BrokerEnv[k]
	})
}

// Scaler is what the scaler needs from the directory (scaler.env): NATS at
// natsURL as a new user of the internal account, signed with the scaler's
// signing key, and the access to the state (its state key).
func (s *Setup) Scaler(natsURL string) (cfenv.NATS, buses.Access, error) {
	file := filepath.Join(s.Dir, ScalerEnvFile)
	access, ok, err := buses.AccessFromEnv(func(k string) string { return s.ScalerEnv[k] })
	if err == nil && !ok {
		err = errors.New("it names no internal account")
	}
	if err != nil {
		return cfenv.NATS{}, access, fmt.Errorf("%s: %w", file, err)
	}
	cfg, err := cfenv.NATSFromURL(natsURL)
	if err != nil {
		return cfg, access, err
	}
	user, err := access.UserOption("hottopic-scaler")
	if err != nil {
		return cfg, access, err
	}
	cfg.Options = append(cfg.Options, user)
	cfg.Source = file
	return cfg, access, nil
}
