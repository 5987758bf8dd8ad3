package provision

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamCache remembers the subjects known to be stored by a stream, so that
// a publish goes out only to a subject JetStream stores, and costs one
// lookup per subject rather than one per event.
//
// Looking first is the rule for every publish to a stream that may be
// missing: publishing first and creating the stream on "no responders" is
// not enough, since a core subscriber on the subject (a tap, a debugging
// `nats sub`) answers nothing, and the publish then waits for its deadline.
type StreamCache struct {
	js    jetstream.JetStream
	mu    sync.Mutex
	known map[string]struct{}
}

// NewStreamCache is an empty cache over js.
func NewStreamCache(js jetstream.JetStream) *StreamCache {
	return &StreamCache{js: js, known: map[string]struct{}{}}
}

// Exists reports whether a stream stores subject, asking JetStream (the
// stream-by-subject lookup) the first time and after Forget.
func (c *StreamCache) Exists(ctx context.Context, subject string) (bool, error) {
	c.mu.Lock()
	_, ok := c.known[subject]
	c.mu.Unlock()
	if ok {
		return true, nil
	}
	_, err := c.js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.add(subject)
	return true, nil
}

func (c *StreamCache) add(subject string) {
	c.mu.Lock()
	c.known[subject] = struct{}{}
	c.mu.Unlock()
}

// Forget drops subject after a publish found no stream (it was deleted).
func (c *StreamCache) Forget(subject string) {
	c.mu.Lock()
	delete(c.known, subject)
	c.mu.Unlock()
}

// Publish stores msg, first creating the stream for its subject with create
// when none stores it.
func (c *StreamCache) Publish(ctx context.Context, msg *nats.Msg, create func(context.Context) error) (*jetstream.PubAck, error) {
	ok, err := c.Exists(ctx, msg.Subject)
	if err != nil {
		return nil, fmt.Errorf("cannot look up the stream of %s: %w", msg.Subject, err)
	}
	if !ok {
		if err := create(ctx); err != nil {
			return nil, err
		}
		c.add(msg.Subject)
	}
	ack, err := c.js.PublishMsg(ctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		c.Forget(msg.Subject) // deleted since: made again on the retry
	}
	return ack, err
}

// PublishToTopic stores msg in its topic's stream (msg.Subject is the
// topic), creating the stream with so if it does not exist yet.
func (c *StreamCache) PublishToTopic(ctx context.Context, msg *nats.Msg, so StreamOptions) (*jetstream.PubAck, error) {
	return c.Publish(ctx, msg, func(ctx context.Context) error {
		_, err := EnsureTopicStream(ctx, c.js, msg.Subject, so)
		return err
	})
}
