// Package buses is the contract between the service broker, which writes it,
// and the parts that serve the buses (the scaler), which read it: the
// broker's state in JetStream KV of the internal account HOTTOPIC — the event
// buses (service instances, each a NATS account), their bindings, and each
// bus's sealed scaler credentials — and the environment that reaches it.
package buses

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// KV buckets of the broker's state, in the internal account.
const (
	// BusesBucket: key = service instance ID, value = Bus (JSON).
	BusesBucket = "hottopic_buses"
	// BindingsBucket: key = <instance id>.<binding id>, value = Binding (JSON).
	BindingsBucket = "hottopic_bindings"
)

// Bus is one service instance: an isolated event bus, a NATS account.
type Bus struct {
	ID string `json:"id"`
	// Name is the service instance's name in Cloud Foundry, when the
	// platform said it at provisioning (OSB context instance_name).
	Name      string `json:"name,omitempty"`
	PlanID    string `json:"plan_id"`
	OrgGUID   string `json:"organization_guid,omitempty"`
	SpaceGUID string `json:"space_guid,omitempty"`
	// Account is the bus account's public key (A…).
	Account string `json:"account"`
	// SigningKey is the public key of the account's signing key; SigningSeed
	// its seed, sealed: it signs the users of new bindings. (The account's
	// identity seed is not kept: the operator signs the account JWT.)
	SigningKey  string `json:"signing_key"`
	SigningSeed string `json:"signing_seed_sealed"`
	// ScalerCreds is the .creds of an unrestricted user of the account, for
	// the scaler to make streams, consumers and mappings there; sealed.
	ScalerCreds string `json:"scaler_creds_sealed"`
	// Topics the bus's bindings may publish to (topics or patterns).
	Topics []string `json:"topics"`
	// Revoked: user public key (or "*" for all) → revocation time (Unix s).
	Revoked map[string]int64 `json:"revoked,omitempty"`
	// Deleting is set once deprovisioning started; the bus takes no bindings
	// and is no longer served.
	Deleting bool `json:"deleting,omitempty"`
}

// DisplayName is the bus's Cloud Foundry name, else its instance ID.
func (b *Bus) DisplayName() string {
	if b.Name != "" {
		return b.Name
	}
	return b.ID
}

// Binding is one service binding (an app) or service key (no app).
type Binding struct {
	ID      string `json:"id"`
	BusID   string `json:"bus_id"`
	Account string `json:"account"`
	// User is the binding's user public key (U…), revoked at unbind.
	User string `json:"user"`
	// AppGUID is empty for a service key.
	AppGUID     string `json:"app_guid,omitempty"`
	InboxPrefix string `json:"inbox_prefix"`
}

// BindingKey is a binding's key in BindingsBucket.
func BindingKey(busID, bindingID string) string { return busID + "." + bindingID }

// Sealed fields of a Bus, the names their seal is bound to.
const (
	FieldSigningSeed = "signing_seed"
	FieldScalerCreds = "scaler_creds"
)

// SealedAt is what a sealed field of bus busID is bound to, so that a sealed
// value copied to another record does not open.
func SealedAt(busID, field string) string { return "bus/" + busID + "/" + field }

// Sealer seals and opens the secrets of the state with the state key
// (AES-256-GCM).
type Sealer struct{ aead cipher.AEAD }

// NewSealer takes the 32-byte state key.
func NewSealer(stateKey []byte) (*Sealer, error) {
	block, err := aes.NewCipher(stateKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvStateKey, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts a secret bound to where it is stored (aad, see SealedAt).
func (s *Sealer) Seal(plain, aad string) string {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(plain), []byte(aad)))
}

// Open decrypts what Seal made for the same aad.
func (s *Sealer) Open(sealed, aad string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", errors.New("sealed value is malformed")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(aad))
	if err != nil {
		return "", errors.New("sealed value does not open with " + EnvStateKey)
	}
	return string(plain), nil
}

// DecodeBus reads a bus record.
func DecodeBus(id string, v []byte) (*Bus, error) {
	b := new(Bus)
	if err := json.Unmarshal(v, b); err != nil {
		return nil, fmt.Errorf("bus %s: unreadable record: %w", id, err)
	}
	if b.Revoked == nil {
		b.Revoked = map[string]int64{}
	}
	return b, nil
}

// DecodeBinding reads a binding record.
func DecodeBinding(id string, v []byte) (*Binding, error) {
	b := new(Binding)
	if err := json.Unmarshal(v, b); err != nil {
		return nil, fmt.Errorf("binding %s: unreadable record: %w", id, err)
	}
	return b, nil
}

// State reads the broker's state, for the parts that serve the buses (the
// scaler): the buses, their bindings, and each bus's scaler credentials.
type State struct {
	*Sealer
	buses, bindings jetstream.KeyValue
}

// OpenState opens the state buckets (which the broker creates) in the
// internal account that js is connected to. Before the broker first ran the
// error wraps jetstream.ErrBucketNotFound.
func OpenState(ctx context.Context, js jetstream.JetStream, stateKey []byte) (*State, error) {
	s, err := NewSealer(stateKey)
	if err != nil {
		return nil, err
	}
	st := &State{Sealer: s}
	if st.buses, err = js.KeyValue(ctx, BusesBucket); err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", BusesBucket, err)
	}
	if st.bindings, err = js.KeyValue(ctx, BindingsBucket); err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", BindingsBucket, err)
	}
	return st, nil
}

// Bus reads one bus; ok is false when there is none.
func (st *State) Bus(ctx context.Context, id string) (b *Bus, ok bool, err error) {
	e, err := st.buses.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read bus %s: %w", id, err)
	}
	b, err = DecodeBus(id, e.Value())
	return b, err == nil, err
}

// Binding reads one binding of a bus; ok is false when there is none.
func (st *State) Binding(ctx context.Context, busID, id string) (*Binding, bool, error) {
	e, err := st.bindings.Get(ctx, BindingKey(busID, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read binding %s: %w", id, err)
	}
	b, err := DecodeBinding(id, e.Value())
	return b, err == nil, err
}

// Bindings lists every binding and service key of every bus.
func (st *State) Bindings(ctx context.Context) ([]*Binding, error) {
	l, err := st.bindings.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bindings: %w", err)
	}
	var out []*Binding
	for k := range l.Keys() {
		busID, id, _ := strings.Cut(k, ".")
		b, ok, err := st.Binding(ctx, busID, id)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, b)
		}
	}
	return out, nil
}

// ScalerCreds opens the bus's scaler credentials (.creds content).
func (st *State) ScalerCreds(b *Bus) (string, error) {
	return st.Open(b.ScalerCreds, SealedAt(b.ID, FieldScalerCreds))
}
