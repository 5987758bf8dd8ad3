package broker

// The broker's state: one KV entry per bus and one per binding, in the
// internal account, so any number of broker instances and the scaler read
// the same. Secrets in it are sealed with HOTTOPIC_STATE_KEY. This file is
// the write side; internal/buses the records and the read side.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/buses"
)

// The state's records and buckets are the contract package internal/buses,
// which the scaler reads; these names keep the broker's code short.
const (
	BusesBucket    = buses.BusesBucket
	BindingsBucket = buses.BindingsBucket
)

type (
	Bus     = buses.Bus
	Binding = buses.Binding
)

func bindingKey(busID, bindingID string) string { return buses.BindingKey(busID, bindingID) }

// store is the KV state and the key that seals its secrets.
type store struct {
	*buses.Sealer
	buses, bindings jetstream.KeyValue
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
	s, err := buses.NewSealer(stateKey)
	if err != nil {
		return nil, err
	}
	return &store{Sealer: s}, nil
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
	if b, err = buses.DecodeBus(id, e.Value()); err != nil {
		return nil, 0, false, err
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
	b, err := buses.DecodeBinding(id, e.Value())
	return b, err == nil, err
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
