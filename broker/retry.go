package broker

// On a cluster, losing a node leaves some seconds (until the client has
// reconnected and the state streams have new leaders) in which a state
// request finds no responder or no answer. The broker sends it again for a
// while rather than failing Cloud Controller's request.

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// retryFor bounds the retries of one call (and the caller's context does).
const (
	retryFor  = 30 * time.Second
	retryWait = 250 * time.Millisecond
)

// errNoSuitablePeers is JetStream's "no suitable peers for placement": a
// replicated bucket made before the meta leader knows every server.
const errNoSuitablePeers = 10005

// transient: no server took the request, JetStream refused it as unavailable
// (503: no meta leader yet, as right after the servers start) or found too
// few servers for the replicas (as then too), or it went unanswered while the
// caller still waits (the attempt's own timeout ran out).
func transient(ctx context.Context, err error) bool {
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	if apiErr := (*jetstream.APIError)(nil); errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == errNoSuitablePeers) {
		return true
	}
	return (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) && ctx.Err() == nil
}

// retrying calls f again while its error is transient.
func retrying[T any](ctx context.Context, f func() (T, error)) (T, error) {
	deadline := time.Now().Add(retryFor)
	for {
		v, err := f()
		if !transient(ctx, err) || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(retryWait):
		}
	}
}

// retryKV is a state bucket whose calls go through retrying. A write that
// went unanswered may have been stored: when its retry then finds the key
// taken (Create) or changed (Update), the value there is compared with the
// one sent, which holds fresh random keys, so equal means it was this write.
type retryKV struct{ jetstream.KeyValue }

func (kv retryKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return retrying(ctx, func() (jetstream.KeyValueEntry, error) { return kv.KeyValue.Get(ctx, key) })
}

func (kv retryKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return kv.write(ctx, key, value, jetstream.ErrKeyExists, func() (uint64, error) { return kv.KeyValue.Create(ctx, key, value, opts...) })
}

func (kv retryKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return kv.write(ctx, key, value, jetstream.ErrKeyRevisionMismatch, func() (uint64, error) { return kv.KeyValue.Update(ctx, key, value, rev) })
}

func (kv retryKV) write(ctx context.Context, key string, value []byte, conflict error, f func() (uint64, error)) (uint64, error) {
	retried := false
	return retrying(ctx, func() (uint64, error) {
		rev, err := f()
		if retried && errors.Is(err, conflict) {
			if e, gerr := kv.Get(ctx, key); gerr == nil && bytes.Equal(e.Value(), value) {
				return e.Revision(), nil
			}
		}
		retried = true
		return rev, err
	})
}

func (kv retryKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	_, err := retrying(ctx, func() (struct{}, error) { return struct{}{}, kv.KeyValue.Purge(ctx, key, opts...) })
	return err
}

func (kv retryKV) ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error) {
	// A copy each time: nats.go prefixes the filters in the slice it is given.
	return retrying(ctx, func() (jetstream.KeyLister, error) {
		return kv.KeyValue.ListKeysFiltered(ctx, append([]string(nil), filters...)...)
	})
}

func (kv retryKV) ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	return retrying(ctx, func() (jetstream.KeyLister, error) { return kv.KeyValue.ListKeys(ctx, opts...) })
}
