package broker

// The broker's state: one KV entry per bus and one per binding, in the
// internal account, so any number of broker instances (and, later, the
// scaler) read the same. Secrets in it are sealed with HOTTOPIC_STATE_KEY.

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

	"github.com/nats-io/nats.go"
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
	ID        string `json:"id"`
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
	// Deleting is set once deprovisioning started; the bus takes no bindings.
	Deleting bool `json:"deleting,omitempty"`
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

func bindingKey(busID, bindingID string) string { return busID + "." + bindingID }

// store is the KV state and the key that seals its secrets.
type store struct {
	buses, bindings jetstream.KeyValue
	aead            cipher.AEAD
}

func openStore(ctx context.Context, js jetstream.JetStream, replicas int, stateKey []byte) (*store, error) {
	s, err := newStore(stateKey)
	if err != nil {
		return nil, err
	}
	for _, b := range []struct {
		name, desc string
		kv         *jetstream.KeyValue
	}{
		{BusesBucket, "Hot Topic broker: event buses (service instances), one key per instance ID", &s.buses},
		{BindingsBucket, "Hot Topic broker: bindings and service keys, key <instance id>.<binding id>", &s.bindings},
	} {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b.name, Description: b.desc, History: 5, Storage: jetstream.FileStorage, Replicas: replicas,
		})
		if err != nil {
			return nil, fmt.Errorf("open KV bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	return s, nil
}

func newStore(stateKey []byte) (*store, error) {
	block, err := aes.NewCipher(stateKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvStateKey, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &store{aead: aead}, nil
}

// State reads the broker's state, for the parts that serve the buses (the
// scaler): the buses, their bindings, and each bus's scaler credentials.
type State struct{ s *store }

// OpenState opens the state buckets (which the broker creates) in the
// internal account that js is connected to.
func OpenState(ctx context.Context, js jetstream.JetStream, stateKey []byte) (*State, error) {
	s, err := newStore(stateKey)
	if err != nil {
		return nil, err
	}
	if s.buses, err = js.KeyValue(ctx, BusesBucket); err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", BusesBucket, err)
	}
	if s.bindings, err = js.KeyValue(ctx, BindingsBucket); err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", BindingsBucket, err)
	}
	return &State{s: s}, nil
}

// Bus reads one bus; ok is false when there is none.
func (st *State) Bus(ctx context.Context, id string) (b *Bus, ok bool, err error) {
	b, _, ok, err = st.s.bus(ctx, id)
	return b, ok, err
}

// Binding reads one binding of a bus; ok is false when there is none.
func (st *State) Binding(ctx context.Context, busID, id string) (*Binding, bool, error) {
	return st.s.binding(ctx, busID, id)
}

// Bindings lists every binding and service key of every bus (the scaler
// finds a mapped app's bus by its AppGUID here).
func (st *State) Bindings(ctx context.Context) ([]*Binding, error) {
	l, err := st.s.bindings.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bindings: %w", err)
	}
	var out []*Binding
	for k := range l.Keys() {
		busID, id, _ := strings.Cut(k, ".")
		b, ok, err := st.s.binding(ctx, busID, id)
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
	return st.s.open(b.ScalerCreds, "bus/"+b.ID+"/scaler_creds")
}

// seal encrypts a secret bound to where it is stored (aad), so a sealed value
// copied to another record does not open.
func (s *store) seal(plain, aad string) string {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(plain), []byte(aad)))
}

func (s *store) open(sealed, aad string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", errors.New("sealed value is malformed")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(aad))
	if err != nil {
		return "", errors.New("sealed value does not open with HOTTOPIC_STATE_KEY")
	}
	return string(plain), nil
}

// bus reads a bus and its revision; ok is false when there is none.
func (s *store) bus(ctx context.Context, id string) (b *Bus, rev uint64, ok bool, err error) {
	e, err := s.buses.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("read bus %s: %w", id, err)
	}
	b = new(Bus)
	if err := json.Unmarshal(e.Value(), b); err != nil {
		return nil, 0, false, fmt.Errorf("bus %s: unreadable record: %w", id, err)
	}
	if b.Revoked == nil {
		b.Revoked = map[string]int64{}
	}
	return b, e.Revision(), true, nil
}

// putBus writes b; rev 0 creates (fails if it exists), else compares and swaps.
func (s *store) putBus(ctx context.Context, b *Bus, rev uint64) (uint64, error) {
	v, _ := json.Marshal(b)
	if rev == 0 {
		return s.buses.Create(ctx, b.ID, v)
	}
	return s.buses.Update(ctx, b.ID, v, rev)
}

func (s *store) binding(ctx context.Context, busID, id string) (*Binding, bool, error) {
	e, err := s.bindings.Get(ctx, bindingKey(busID, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read binding %s: %w", id, err)
	}
	b := new(Binding)
	if err := json.Unmarshal(e.Value(), b); err != nil {
		return nil, false, fmt.Errorf("binding %s: unreadable record: %w", id, err)
	}
	return b, true, nil
}

// bindingsOf lists the bindings of a bus.
func (s *store) bindingsOf(ctx context.Context, busID string) ([]string, error) {
	l, err := s.bindings.ListKeysFiltered(ctx, busID+".*")
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// replicas is 3 on a cluster of three or more servers, else 1, like the
// mapping bucket.
func replicas(nc *nats.Conn) int {
	if nc.ConnectedClusterName() != "" && len(nc.Servers()) >= 3 {
		return 3
	}
	return 1
}
