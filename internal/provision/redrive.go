package provision

// This file provisions the per-app path (topic.RedriveStream): dead letters
// sent back to the app that failed them (redrive) and past events sent again
// (replay). Each app has one consumer per topic on the stream, filtered on
// the literal subject hottopic.redrive.<app-guid>.<topic>; only that app's
// sidecar reads it, so no other app can receive what is sent there.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// Headers of an event on the per-app path.
const (
	// HeaderDeadLetter is the HOTTOPIC_DLQ sequence of the dead letter a
	// redriven event came from: the sidecar deletes that letter once the app
	// has taken the event (2xx) or it was dead-lettered again.
	HeaderDeadLetter = "Hottopic-Dead-Letter"
	// HeaderDeadLetterID is that letter's Nats-Msg-Id: the sidecar deletes
	// only the letter it names.
	HeaderDeadLetterID = "Hottopic-Dead-Letter-Id"
	// HeaderPreviousReason is the reason of an earlier dead-lettering of the
	// same event, one value per time, oldest first.
	HeaderPreviousReason = "Hottopic-Previous-Reason"
	// HeaderRedrives counts how often the event was redriven.
	HeaderRedrives = "Hottopic-Redrives"
	// HeaderReplay marks a replayed event: the value is the stream it was
	// copied from.
	HeaderReplay = "Hottopic-Replay"
	// MetaRedrive marks a per-app consumer in its metadata.
	MetaRedrive = "hottopic.io/redrive"
)

// RedriveStreamConfig is the per-app stream: a work queue (an event is gone
// once its app acked it), subjects hottopic.redrive.>.
func RedriveStreamConfig(o StreamOptions, nc *nats.Conn) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        topic.RedriveStream,
		Description: "Hot Topic: dead letters and replayed events sent to one app only",
		Subjects:    []string{topic.RedrivePrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.maxAge(),
		Replicas:    o.replicas(nc),
		Discard:     jetstream.DiscardOld,
	}
}

// EnsureRedriveStream creates the per-app stream if missing.
func EnsureRedriveStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	return ensureStream(ctx, js, RedriveStreamConfig(o, js.Conn()))
}

// RedriveConsumerConfig is app appGUID's one consumer of what is sent to it
// alone, on every topic: the same delivery settings as its topic consumers,
// and every message the stream holds for it.
func RedriveConsumerConfig(appGUID string, s mapping.Settings) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       topic.RedriveConsumerName(appGUID),
		Description:   "Hot Topic app " + appGUID + ": redriven and replayed events",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Duration(s.TimeoutSeconds) * time.Second,
		MaxDeliver:    s.MaxDeliver,
		FilterSubject: topic.RedriveFilter(appGUID),
		MaxAckPending: 1000,
		Metadata:      map[string]string{MetaApp: appGUID, MetaRedrive: "true"},
	}
}

// EnsureRedriveConsumer creates the per-app stream if missing and creates or
// updates app appGUID's consumer on it. Consumers of earlier versions (one
// per topic, <app-guid>__<stream>) are deleted first: a work queue refuses
// overlapping filters; what they had not delivered stays in the stream, for
// the new one.
func EnsureRedriveConsumer(ctx context.Context, js jetstream.JetStream, appGUID string, s mapping.Settings, o StreamOptions) (jetstream.Consumer, error) {
	if err := topic.ValidConsumerName(appGUID); err != nil {
		return nil, err
	}
	st, err := EnsureRedriveStream(ctx, js, o)
	if err != nil {
		return nil, err
	}
	cfg := RedriveConsumerConfig(appGUID, s)
	if _, err := st.Consumer(ctx, cfg.Durable); errors.Is(err, jetstream.ErrConsumerNotFound) {
		names := st.ConsumerNames(ctx)
		for n := range names.Name() {
			if strings.HasPrefix(n, appGUID+"__") {
				if err := st.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
					return nil, fmt.Errorf("delete consumer %s on stream %s: %w", n, topic.RedriveStream, err)
				}
			}
		}
		if err := names.Err(); err != nil {
			return nil, fmt.Errorf("list consumers of stream %s: %w", topic.RedriveStream, err)
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, topic.RedriveStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on stream %s: %w", cfg.Durable, topic.RedriveStream, err)
	}
	return c, nil
}

// RemoveRedrive deletes app appGUID's leftovers on the per-app path: its
// events for topic t (all its events when t is ""), and with them, for "",
// its consumer. Nothing there is no error.
func RemoveRedrive(ctx context.Context, js jetstream.JetStream, appGUID, t string) error {
	if err := topic.ValidConsumerName(appGUID); err != nil {
		return err
	}
	st, err := js.Stream(ctx, topic.RedriveStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", topic.RedriveStream, err)
	}
	subject := topic.RedriveFilter(appGUID)
	if t != "" {
		subject = topic.RedriveSubject(appGUID, t)
	} else if err := st.DeleteConsumer(ctx, topic.RedriveConsumerName(appGUID)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete consumer %s on stream %s: %w", appGUID, topic.RedriveStream, err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("purge %s from stream %s: %w", subject, topic.RedriveStream, err)
	}
	return nil
}

// AgainDeadLetterMsg is the dead letter of an event from the per-app path
// that failed again (seq is its sequence in RedriveStream, deliveries the
// attempts made there). It keeps the event's history: the original stream
// sequence, the attempts of every round added up, and each earlier reason
// in Hottopic-Previous-Reason; its Nats-Msg-Id differs from the earlier
// letter's, so it is stored as a new letter.
func AgainDeadLetterMsg(app, t string, h nats.Header, data []byte, reason string, deliveries, seq uint64) *nats.Msg {
	orig, _ := strconv.ParseUint(h.Get(HeaderStreamSequence), 10, 64)
	prev, _ := strconv.ParseUint(h.Get(HeaderDeliveries), 10, 64)
	keep := nats.Header{}
	for k, v := range h {
		switch k {
		case HeaderDeadLetter, HeaderDeadLetterID, HeaderReason, HeaderDeliveries, HeaderStreamSequence, HeaderApp:
			continue
		}
		keep[k] = append([]string(nil), v...)
	}
	if h.Get(HeaderDeadLetter) != "" {
		keep.Add(HeaderPreviousReason, h.Get(HeaderReason))
	}
	// The publisher's message id was kept as Hottopic-Msg-Id and stays so;
	// the per-app message's own id is no part of the event.
	keep.Del(jetstream.MsgIDHeader)
	if id := h.Get(HeaderMsgID); id != "" {
		keep.Set(jetstream.MsgIDHeader, id)
	}
	m := DeadLetterMsg(DeadLetter{App: app, Topic: t, Reason: reason, Deliveries: prev + deliveries, StreamSequence: orig, Header: keep, Data: data})
	m.Header.Set(jetstream.MsgIDHeader, m.Header.Get(jetstream.MsgIDHeader)+":r"+strconv.FormatUint(seq, 10))
	return m
}

// PublishAgainDeadLetter stores a letter made by AgainDeadLetterMsg.
func PublishAgainDeadLetter(ctx context.Context, js jetstream.JetStream, m *nats.Msg, so StreamOptions) (*jetstream.PubAck, error) {
	if !strings.HasPrefix(m.Subject, topic.DLQPrefix) {
		return nil, fmt.Errorf("dead letter: subject %s is not under %s", m.Subject, topic.DLQPrefix)
	}
	ack, err := NewStreamCache(js).Publish(ctx, m, func(ctx context.Context) error {
		_, err := EnsureDLQStream(ctx, js, so)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dead letter for %s: %w", strings.TrimPrefix(m.Subject, topic.DLQPrefix), NATSError(err))
	}
	return ack, nil
}

// DeleteDeadLetter deletes dead letter seq of HOTTOPIC_DLQ if it is still the
// one whose Nats-Msg-Id is id; a letter already gone is no error.
func DeleteDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64, id string) error {
	return DeleteDeadLetterOf(ctx, js, "", seq, id)
}

// DeleteDeadLetterOf is DeleteDeadLetter for a letter of app appGUID only
// ("" for any app): a settlement announced on an app's subject removes none
// of another app's letters.
func DeleteDeadLetterOf(ctx context.Context, js jetstream.JetStream, appGUID string, seq uint64, id string) error {
	s, err := js.Stream(ctx, topic.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	stored, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // purged or redriven meanwhile
	}
	if err != nil {
		return err
	}
	if stored.Header.Get(jetstream.MsgIDHeader) != id || appGUID != "" && stored.Header.Get(HeaderApp) != appGUID {
		return nil
	}
	return s.DeleteMsg(ctx, seq)
}

// The settlements of the per-app path: sidecars announce each on
// hottopic.settled.<app-guid> (core NATS, so a broker binding needs no
// JetStream grant for it); HOTTOPIC_SETTLED keeps them until the scaler has
// deleted the dead letters they name.
const (
	SettledStream   = "HOTTOPIC_SETTLED"
	SettledConsumer = "hottopic-scaler"
)

// SettledStreamConfig is the settlements' stream: a work queue the scaler drains.
func SettledStreamConfig(o StreamOptions, nc *nats.Conn) jetstream.StreamConfig {
	return scalerQueueConfig(SettledStream, "Hot Topic: settled redriven events whose dead letters the scaler deletes", topic.SettledPrefix+">", o, nc)
}

// EnsureSettledConsumer creates the settlements' stream if missing and the
// scaler's consumer on it.
func EnsureSettledConsumer(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Consumer, error) {
	if _, err := ensureStream(ctx, js, SettledStreamConfig(o, js.Conn())); err != nil {
		return nil, err
	}
	return scalerConsumer(ctx, js, SettledStream, SettledConsumer, "Hot Topic scaler: deletes the dead letters of settled redriven events")
}
