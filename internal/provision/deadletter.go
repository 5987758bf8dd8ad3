package provision

// This file builds and publishes Hot Topic dead letters: the original event
// (payload and headers) on hottopic.dlq.<topic>, stored in the HOTTOPIC_DLQ
// stream, with Hottopic-* headers saying whose it was and why it died. The sidecar (rejected or exhausted deliveries) and the scaler (the
// max-deliveries advisory) both dead-letter through here, so a dead letter
// looks the same whoever wrote it, and the same event dead-lettered by both is
// stored once.

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/topic"
)

// Headers added to every dead letter.
const (
	HeaderApp            = "Hottopic-App"
	HeaderReason         = "Hottopic-Reason"
	HeaderDeliveries     = "Hottopic-Deliveries"
	HeaderStreamSequence = "Hottopic-Stream-Sequence"
	// HeaderMsgID keeps the publisher's Nats-Msg-Id: the dead letter needs its
	// own for de-duplication, and NATS control headers are not copied.
	HeaderMsgID = "Hottopic-Msg-Id"
)

// maxReason keeps a reason header readable (error texts can be long).
const maxReason = 512

// DeadLetter is one event that could not be delivered to an app.
type DeadLetter struct {
	App            string      // app GUID
	Topic          string      // the event's topic
	Reason         string      // e.g. "HTTP 400 Bad Request" or "max deliveries (5) reached"
	Deliveries     uint64      // delivery attempts made
	StreamSequence uint64      // the event's sequence in its topic stream
	Header         nats.Header // the event's headers (may be nil)
	Data           []byte      // the event's payload
}

// MsgID is the dead letter's Nats-Msg-Id: one per (app, topic, sequence), so
// the sidecar and the scaler dead-lettering the same event store it once
// (within the DLQ stream's duplicate window).
func (l DeadLetter) MsgID() string {
	return "dlq:" + l.App + ":" + topic.StreamName(l.Topic) + ":" + strconv.FormatUint(l.StreamSequence, 10)
}

// DeadLetterMsg is the dead letter as a NATS message on topic.DLQSubject(l.Topic).
// The original headers are copied except NATS's own (Nats-*), which would
// steer or reject the publish (expected-sequence checks, TTLs, de-duplication
// against the original) or describe the original's storage.
func DeadLetterMsg(l DeadLetter) *nats.Msg {
	h := make(nats.Header, len(l.Header)+6)
	for k, v := range l.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	if id := l.Header.Get(jetstream.MsgIDHeader); id != "" {
		h.Set(HeaderMsgID, id)
	}
	h.Set(HeaderApp, l.App)
	h.Set(HeaderReason, cleanReason(l.Reason))
	h.Set(HeaderDeliveries, strconv.FormatUint(l.Deliveries, 10))
	h.Set(HeaderStreamSequence, strconv.FormatUint(l.StreamSequence, 10))
	h.Set(jetstream.MsgIDHeader, l.MsgID())
	return &nats.Msg{Subject: topic.DLQSubject(l.Topic), Header: h, Data: l.Data}
}

// PublishDeadLetter stores the dead letter and waits for JetStream's acknowledgement,
// creating the HOTTOPIC_DLQ stream (with so) if it does not exist yet.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, l DeadLetter, so StreamOptions) (*jetstream.PubAck, error) {
	if err := topic.Validate(l.Topic); err != nil {
		return nil, fmt.Errorf("dead letter: %w", err)
	}
	// Dead letters are rare: a lookup each (no cache) costs nothing.
	ack, err := NewStreamCache(js).Publish(ctx, DeadLetterMsg(l), func(ctx context.Context) error {
		_, err := EnsureDLQStream(ctx, js, so)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dead letter for %s seq %d: %w", l.Topic, l.StreamSequence, NATSError(err))
	}
	return ack, nil
}

// cleanReason makes a reason a valid, bounded, single-line header value.
func cleanReason(r string) string {
	r = strings.Map(func(c rune) rune {
		if c == '\r' || c == '\n' || c == '\t' {
			return ' '
		}
		return c
	}, strings.TrimSpace(r))
	if r == "" {
		r = "unknown"
	}
	if len(r) > maxReason {
		r = strings.ToValidUTF8(r[:maxReason], "")
	}
	return r
}
