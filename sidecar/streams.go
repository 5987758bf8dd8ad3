package sidecar

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// streamCache remembers the topics known to have a stream, so that a
// publish goes out only to a subject JetStream stores. Publishing first and
// creating the stream on "no responders" is not enough: a core subscriber
// on the subject (a tap, a debugging `nats sub`) answers nothing, and the
// publish then waits for its deadline.
type streamCache struct {
	js    jetstream.JetStream
	mu    sync.Mutex
	known map[string]struct{}
}

func newStreamCache(js jetstream.JetStream) *streamCache {
	return &streamCache{js: js, known: map[string]struct{}{}}
}

// exists reports whether a stream stores topic t, asking JetStream (the
// stream-by-subject lookup) the first time and after forget.
func (c *streamCache) exists(ctx context.Context, t string) (bool, error) {
	c.mu.Lock()
	_, ok := c.known[t]
	c.mu.Unlock()
	if ok {
		return true, nil
	}
	_, err := c.js.StreamNameBySubject(ctx, t)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.add(t)
	return true, nil
}

func (c *streamCache) add(t string) {
	c.mu.Lock()
	c.known[t] = struct{}{}
	c.mu.Unlock()
}

// forget drops t after a publish found no stream (it was deleted).
func (c *streamCache) forget(t string) {
	c.mu.Lock()
	delete(c.known, t)
	c.mu.Unlock()
}
