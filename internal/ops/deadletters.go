// Package ops acts on what operators see: dead letters (list, show, redrive,
// purge) and past events (replay). Everything sent back to an app goes over
// the per-app path (topic.RedriveStream), which only that app reads. The CLI
// runs these against the dev runtime's NATS or any NATS it is given.
package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// Letter is one dead letter as stored in HOTTOPIC_DLQ.
type Letter struct {
	ID              uint64      `json:"id"` // its sequence in HOTTOPIC_DLQ
	Time            time.Time   `json:"time"`
	App             string      `json:"app_guid"`
	AppName         string      `json:"app,omitempty"` // filled by the caller when known
	Topic           string      `json:"topic"`
	Reason          string      `json:"reason"`
	Deliveries      uint64      `json:"deliveries"`
	StreamSequence  uint64      `json:"stream_sequence"`
	Redrives        int         `json:"redrives"`
	PreviousReasons []string    `json:"previous_reasons,omitempty"`
	Size            int         `json:"size"`
	Header          nats.Header `json:"headers"`
	Data            []byte      `json:"-"`
}

func letterOf(seq uint64, t time.Time, subject string, h nats.Header, data []byte) Letter {
	l := Letter{ID: seq, Time: t, Topic: strings.TrimPrefix(subject, topic.DLQPrefix), Header: h, Data: data, Size: len(data)}
	if h == nil {
		l.Header = nats.Header{}
	}
	l.App = l.Header.Get(provision.HeaderApp)
	l.Reason = l.Header.Get(provision.HeaderReason)
	l.Deliveries, _ = strconv.ParseUint(l.Header.Get(provision.HeaderDeliveries), 10, 64)
	l.StreamSequence, _ = strconv.ParseUint(l.Header.Get(provision.HeaderStreamSequence), 10, 64)
	l.Redrives, _ = strconv.Atoi(l.Header.Get(provision.HeaderRedrives))
	l.PreviousReasons = l.Header.Values(provision.HeaderPreviousReason)
	return l
}

// Filter selects dead letters; zero fields select all.
type Filter struct {
	App       string    // app GUID
	Topic     string    // topic
	IDs       []uint64  // these letters only
	OlderThan time.Time // stored before this time
}

// matcher is f as a test of one letter; the IDs in a set, since a purge
// through the scaler names every letter it deletes.
func (f Filter) matcher() func(Letter) bool {
	ids := make(map[uint64]bool, len(f.IDs))
	for _, id := range f.IDs {
		ids[id] = true
	}
	return func(l Letter) bool {
		return (f.App == "" || l.App == f.App) && (f.Topic == "" || l.Topic == f.Topic) &&
			(len(ids) == 0 || ids[l.ID]) && (f.OlderThan.IsZero() || l.Time.Before(f.OlderThan))
	}
}

// ErrNoLetter is returned by Get for an ID that holds no dead letter.
var ErrNoLetter = errors.New("no such dead letter")

// List reads the dead letters f selects, newest first. No dead-letter stream
// means none.
func List(ctx context.Context, js jetstream.JetStream, f Filter) ([]Letter, error) {
	if f.Topic != "" {
		if err := topic.Validate(f.Topic); err != nil {
			return nil, err
		}
	}
	s, err := js.Stream(ctx, topic.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return []Letter{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", topic.DLQStream, err)
	}
	subject := topic.DLQPrefix + ">"
	if f.Topic != "" {
		subject = topic.DLQSubject(f.Topic)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", topic.DLQStream, err)
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	out := []Letter{}
	if total == 0 {
		return out, nil
	}
	match := f.matcher()
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", topic.DLQStream, err)
	}
	// Fetch exactly what is left (NumPending): a batch returns as soon as it
	// is complete; the wait only matters when letters vanish meanwhile.
	for left := total; left > 0; {
		batch, err := c.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", topic.DLQStream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			l := letterOf(md.Sequence.Stream, md.Timestamp, m.Subject(), m.Headers(), m.Data())
			if match(l) {
				out = append(out, l)
			}
			left = md.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("reading %s: %w", topic.DLQStream, err)
		}
		if n == 0 {
			break
		}
	}
	slices.Reverse(out)
	return out, nil
}

// Get reads dead letter id.
func Get(ctx context.Context, js jetstream.JetStream, id uint64) (Letter, error) {
	s, err := js.Stream(ctx, topic.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return Letter{}, fmt.Errorf("%w: %d (there are no dead letters)", ErrNoLetter, id)
	}
	if err != nil {
		return Letter{}, fmt.Errorf("dead-letter stream %s: %w", topic.DLQStream, err)
	}
	m, err := s.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Letter{}, fmt.Errorf("%w: %d", ErrNoLetter, id)
	}
	if err != nil {
		return Letter{}, fmt.Errorf("dead letter %d: %w", id, err)
	}
	return letterOf(m.Sequence, m.Time, m.Subject, m.Header, m.Data), nil
}

// Purge deletes the given letters; it returns how many it deleted (a letter
// already gone counts as deleted by someone else, not here).
func Purge(ctx context.Context, js jetstream.JetStream, letters []Letter) (int, error) {
	if len(letters) == 0 {
		return 0, nil
	}
	s, err := js.Stream(ctx, topic.DLQStream)
	if err != nil {
		return 0, fmt.Errorf("dead-letter stream %s: %w", topic.DLQStream, err)
	}
	n := 0
	for _, l := range letters {
		if err := s.DeleteMsg(ctx, l.ID); err != nil {
			if _, gerr := s.GetMsg(ctx, l.ID); errors.Is(gerr, jetstream.ErrMsgNotFound) {
				continue
			}
			return n, fmt.Errorf("deleted %d, then dead letter %d: %v", n, l.ID, err)
		}
		n++
	}
	return n, nil
}
