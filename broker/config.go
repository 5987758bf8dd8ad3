package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// Environment of hottopic-broker (besides PORT and NATS as cfenv finds it).
const (
	EnvUsername = "BROKER_USERNAME"
	EnvPassword = "BROKER_PASSWORD"
	// EnvOperatorSigningKey: a signing key seed (SO…) of the operator; signs
	// the bus accounts.
	EnvOperatorSigningKey = "HOTTOPIC_OPERATOR_SIGNING_KEY"
	// EnvSystemAccountKey: a signing key seed (SA…) of the system account;
	// the broker mints its own $SYS user with it to push account JWTs.
	EnvSystemAccountKey = "HOTTOPIC_SYSTEM_ACCOUNT_KEY"
	EnvSystemAccount    = "HOTTOPIC_SYSTEM_ACCOUNT"
	// EnvInternalAccountKey: a signing key seed (SA…) of the internal account
	// HOTTOPIC, where the state is; EnvInternalAccount its public key.
	EnvInternalAccountKey = buses.EnvInternalAccountKey
	EnvInternalAccount    = buses.EnvInternalAccount
	// EnvStateKey: 32 bytes, base64; seals the secrets kept in the state.
	EnvStateKey = buses.EnvStateKey
	// EnvBindingURLs: the NATS URLs handed to bound apps, when they reach
	// NATS by another address than the broker (optional). With a CA
	// configured (cfenv.EnvNATSCACert), nats:// ones are handed out as tls://.
	EnvBindingURLs = "HOTTOPIC_BINDING_URLS"
)

// Config is what the broker needs, read and checked by ConfigFromEnv.
type Config struct {
	Username, Password string
	NATS               cfenv.NATS
	BindingURLs        []string
	OperatorSigner     nkeys.KeyPair
	SystemAccount      string
	SystemSigner       nkeys.KeyPair
	InternalAccount    string
	InternalSigner     nkeys.KeyPair
	StateKey           []byte
	// BusLimits go into every bus account's JWT when it is pushed.
	BusLimits BusLimits
}

// ConfigFromEnv reads the configuration; an error is one line naming the
// variable.
func ConfigFromEnv(getenv cfenv.Getenv) (Config, error) {
	var c Config
	var err error
	for _, v := range []struct {
		key string
		dst *string
	}{{EnvUsername, &c.Username}, {EnvPassword, &c.Password}} {
		if *v.dst = strings.TrimSpace(getenv(v.key)); *v.dst == "" {
			return c, fmt.Errorf("%s is not set", v.key)
		}
	}
	if len(c.Password) < 16 {
		return c, fmt.Errorf("%s must be at least 16 characters", EnvPassword)
	}
	if c.OperatorSigner, err = seedVar(getenv, EnvOperatorSigningKey, nkeys.PrefixByteOperator); err != nil {
		return c, err
	}
	if c.SystemSigner, err = seedVar(getenv, EnvSystemAccountKey, nkeys.PrefixByteAccount); err != nil {
		return c, err
	}
	if c.InternalSigner, err = seedVar(getenv, EnvInternalAccountKey, nkeys.PrefixByteAccount); err != nil {
		return c, err
	}
	if c.SystemAccount, err = accountVar(getenv, EnvSystemAccount); err != nil {
		return c, err
	}
	if c.InternalAccount, err = accountVar(getenv, EnvInternalAccount); err != nil {
		return c, err
	}
	if c.StateKey, err = buses.StateKeyFromEnv(getenv); err != nil {
		return c, err
	}
	if c.NATS, err = cfenv.NATSFromEnv(getenv); err != nil {
		return c, err
	}
	if c.BusLimits, err = busLimitsFromEnv(getenv); err != nil {
		return c, err
	}
	c.BindingURLs = c.NATS.URLs
	if u := strings.TrimSpace(getenv(EnvBindingURLs)); u != "" {
		n, err := cfenv.NATSFromURL(u)
		if err != nil {
			return c, fmt.Errorf("%s: %w", EnvBindingURLs, err)
		}
		c.BindingURLs = n.URLs
	}
	if c.NATS.CACert != "" {
		// Bindings then carry the CA (ca_cert), and the sidecar speaks TLS.
		c.BindingURLs = slices.Clone(c.BindingURLs)
		for i, u := range c.BindingURLs {
			if rest, ok := strings.CutPrefix(u, "nats://"); ok {
				c.BindingURLs[i] = "tls://" + rest
			}
		}
	}
	return c, nil
}

func seedVar(getenv cfenv.Getenv, key string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	return buses.SeedVar(getenv, key, prefix)
}

func accountVar(getenv cfenv.Getenv, key string) (string, error) {
	return buses.AccountVar(getenv, key)
}

// connect dials NATS as configured, with the user option given last.
func connect(ctx context.Context, cfg Config, name string, user nats.Option) (*nats.Conn, error) {
	return cfenv.Connect(ctx, cfg.NATS, name, user)
}
