package buses

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Environment that reaches the state (hottopic-broker init writes it to
// broker.env and scaler.env, each with its own signing key).
const (
	// EnvStateKey: 32 bytes, base64; seals the secrets kept in the state.
	EnvStateKey = "HOTTOPIC_STATE_KEY"
	// EnvInternalAccountKey: a signing key seed (SA…) of the internal account
	// HOTTOPIC, where the state is; EnvInternalAccount its public key.
	EnvInternalAccountKey = "HOTTOPIC_INTERNAL_ACCOUNT_KEY"
	EnvInternalAccount    = "HOTTOPIC_INTERNAL_ACCOUNT"
)

// Access is what reaches and opens the state: a signing key of the internal
// account (to mint a user of it) and the state key.
type Access struct {
	Account  string
	Signer   nkeys.KeyPair
	StateKey []byte
}

// AccessFromEnv reads EnvInternalAccount, EnvInternalAccountKey and
// EnvStateKey. ok is false when none is set (no broker: one bus); setting
// some but not all is an error naming the missing one.
func AccessFromEnv(getenv func(string) string) (a Access, ok bool, err error) {
	vars := []string{EnvStateKey, EnvInternalAccountKey, EnvInternalAccount}
	set := 0
	for _, k := range vars {
		if strings.TrimSpace(getenv(k)) != "" {
			set++
		}
	}
	if set == 0 {
		return a, false, nil
	}
	for _, k := range vars {
		if strings.TrimSpace(getenv(k)) == "" {
			return a, false, fmt.Errorf("%s is not set (the service broker's state needs %s; hottopic-broker init writes them)", k, strings.Join(vars, ", "))
		}
	}
	if a.StateKey, err = StateKeyFromEnv(getenv); err != nil {
		return a, false, err
	}
	if a.Signer, err = SeedVar(getenv, EnvInternalAccountKey, nkeys.PrefixByteAccount); err != nil {
		return a, false, err
	}
	if a.Account, err = AccountVar(getenv, EnvInternalAccount); err != nil {
		return a, false, err
	}
	return a, true, nil
}

// StateKeyFromEnv reads EnvStateKey: 32 bytes in base64.
func StateKeyFromEnv(getenv func(string) string) ([]byte, error) {
	raw := strings.TrimSpace(getenv(EnvStateKey))
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%s must be 32 bytes in base64 (hottopic-broker init writes one), got %d characters", EnvStateKey, len(raw))
	}
	return key, nil
}

// UserOption connects as a new unrestricted user of the internal account,
// named name (it shows in the servers' connection lists).
func (a Access) UserOption(name string) (nats.Option, error) {
	creds, _, err := IssueUser(name, a.Account, a.Signer, jwt.Permissions{})
	if err != nil {
		return nil, err
	}
	return CredsOption(creds)
}

// SeedVar reads an nkey seed whose public key has the given prefix.
func SeedVar(getenv func(string) string, key string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	v := strings.TrimSpace(getenv(key))
	if v == "" {
		return nil, fmt.Errorf("%s is not set", key)
	}
	kp, err := nkeys.FromSeed([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("%s is not an nkey seed", key)
	}
	pub, _ := kp.PublicKey()
	if nkeys.Prefix(pub) != prefix {
		kind := map[nkeys.PrefixByte]string{nkeys.PrefixByteOperator: "an operator key (SO…)", nkeys.PrefixByteAccount: "an account key (SA…)"}[prefix]
		return nil, fmt.Errorf("%s must be the seed of %s, got the seed of an S%c… key", key, kind, pub[0])
	}
	return kp, nil
}

// AccountVar reads an account public key (A…).
func AccountVar(getenv func(string) string, key string) (string, error) {
	v := strings.TrimSpace(getenv(key))
	if v == "" {
		return "", fmt.Errorf("%s is not set", key)
	}
	if !nkeys.IsValidPublicAccountKey(v) {
		return "", fmt.Errorf("%s must be an account public key (A…), got %q", key, v)
	}
	return v, nil
}

// IssueUser makes a user of the account whose key (identity or signing) is
// accountKey, with the given permissions; it returns the .creds content and
// the user's public key. account is the identity public key of the account.
func IssueUser(name, account string, accountKey nkeys.KeyPair, perms jwt.Permissions, tags ...string) (creds, userPub string, err error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return "", "", err
	}
	userPub, _ = ukp.PublicKey()
	seed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(userPub)
	uc.Name = name
	uc.Permissions = perms
	uc.Tags.Add(tags...)
	if signer, _ := accountKey.PublicKey(); signer != account {
		uc.IssuerAccount = account
	}
	token, err := uc.Encode(accountKey)
	if err != nil {
		return "", "", err
	}
	c, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		return "", "", err
	}
	return string(c), userPub, nil
}

// CredsOption connects with the content of a .creds file.
func CredsOption(creds string) (nats.Option, error) {
	token, err := jwt.ParseDecoratedJWT([]byte(creds))
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.ParseDecoratedNKey([]byte(creds))
	if err != nil {
		return nil, err
	}
	seed, _ := kp.Seed()
	return nats.UserJWTAndSeed(token, string(seed)), nil
}
