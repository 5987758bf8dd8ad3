package provision

// The start of a mapping. A topic stream has interest retention: an event
// stored while no consumer on the stream wants it is dropped at once, by
// each replica for itself, and the publisher is told it was stored. On a
// cluster a new consumer is visible (its info is answered by a node it was
// assigned to) before it runs on the stream's replicas, so an event
// published as soon as a mapping shows was dropped: on a 3-node cluster, 200
// of 200 such events with the DeliverNew start, 185 of 200 with an explicit
// start sequence (docs/reliability.md). A stream EnsureMapping makes
// therefore takes no event until the app's consumer runs on every replica:
// it is made on a subject nobody publishes to, and given its topic's subject
// only then. Until then a publish finds no stream ("map an app to it
// first"), never a stream that throws the event away.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// placeWithin bounds how long EnsureMapping waits for a new stream's first
// consumer to run on every replica before it gives up (and is tried again).
const placeWithin = 30 * time.Second

// openingSubject is the subject of topic t's stream until its first
// consumer runs: under the reserved "hottopic." prefix, which no topic may
// have, so nothing is published to it.
func openingSubject(t string) string { return "hottopic.opening." + topic.StreamName(t) }

// EnsureMapping makes app appGUID's mapping to topic t: the topic's stream
// if missing and the app's consumer (see EnsureConsumer). A stream it makes
// takes events only once that consumer runs on every replica, so every
// event the stream accepts reaches the app. On a stream that exists, the
// app's consumer starts right after the stream's last event when it is
// created, and runs on every replica when this returns.
func EnsureMapping(ctx context.Context, js jetstream.JetStream, appGUID, appName, t string, s mapping.Settings, o StreamOptions) (jetstream.Consumer, error) {
	if err := topic.Validate(t); err != nil {
		return nil, err
	}
	st, err := ensureTopicStreamWithArchive(ctx, js, t, openingSubject(t), o)
	if err != nil {
		return nil, err
	}
	c, err := EnsureConsumer(ctx, js, appGUID, appName, t, s)
	if err != nil {
		return nil, err
	}
	if opening(st, t) && !awaitPlaced(ctx, c, st.CachedInfo().Config.Replicas, placeWithin) {
		return nil, fmt.Errorf("stream %s: consumer %s does not run on every replica after %s; the topic takes no events until it does", st.CachedInfo().Config.Name, topic.ConsumerName(appGUID), placeWithin)
	}
	return c, openStream(ctx, js, st, t)
}

func opening(st jetstream.Stream, t string) bool {
	return slices.Contains(st.CachedInfo().Config.Subjects, openingSubject(t))
}

// openStream gives topic t's stream, if still opening, its topic's subject.
func openStream(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, t string) error {
	if !opening(st, t) {
		return nil
	}
	cfg := st.CachedInfo().Config
	cfg.Subjects = []string{t}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("stream %s: give it subject %s: %w", cfg.Name, t, err)
	}
	return nil
}
