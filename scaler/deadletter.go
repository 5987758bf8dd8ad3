package scaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/provision"
)

// advisory is JetStream's io.nats.jetstream.advisory.v1.max_deliver event.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

func (s *Scaler) ensureAdvisoryStreams(ctx context.Context) error {
	if _, err := provision.EnsureDLQStream(ctx, s.js, s.o.streams); err != nil {
		return err
	}
	_, err := provision.EnsureAdvisoryStream(ctx, s.js, s.o.streams)
	return err
}

// deadLetterLoop drains the advisory stream while this scaler leads. The
// sidecar dead-letters what it sees fail; what remains are events whose last
// delivery expired with no sidecar alive (crash loops, a killed instance).
func (s *Scaler) deadLetterLoop(ctx context.Context) {
	for ctx.Err() == nil {
		if !s.leader.Load() {
			s.setDeadLetterErr("")
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		if err := s.ensureAdvisoryStreams(ctx); err != nil {
			s.deadLetterFailed("dead-lettering: advisory stream unavailable; will retry", err)
			sleep(ctx, 2*time.Second)
			continue
		}
		c, err := provision.EnsureAdvisoryConsumer(ctx, s.js)
		if err != nil {
			s.deadLetterFailed("dead-lettering: advisory consumer unavailable; will retry", err)
			sleep(ctx, 2*time.Second)
			continue
		}
		cc, err := c.Consume(func(m jetstream.Msg) { s.handleAdvisory(ctx, m) },
			jetstream.PullMaxMessages(16), jetstream.PullExpiry(5*time.Second),
			jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {}))
		if err != nil {
			s.deadLetterFailed("dead-lettering: cannot consume advisories; will retry", err)
			sleep(ctx, 2*time.Second)
			continue
		}
		s.setDeadLetterErr("")
		// Look at the consumer now and then: the advisory stream or its
		// consumer may be lost (deleted by hand, a NATS restart without its
		// store) without the consume loop ever noticing.
		check := time.NewTicker(2 * time.Second)
	watch:
		for ctx.Err() == nil && s.leader.Load() {
			select {
			case <-ctx.Done():
			case <-cc.Closed():
				break watch
			case <-check.C:
				if _, err := c.Info(ctx); errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
					s.log.Warn("dead-lettering: advisory stream or consumer lost; creating it again", "error", err)
					break watch
				}
			case <-time.After(250 * time.Millisecond):
			}
		}
		check.Stop()
		cc.Stop()
	}
}

func (s *Scaler) setDeadLetterErr(e string) {
	s.mu.Lock()
	s.deadLetterErr = e
	s.mu.Unlock()
}

func (s *Scaler) deadLetterFailed(msg string, err error) {
	s.mu.Lock()
	changed := s.deadLetterErr != err.Error()
	s.deadLetterErr = err.Error()
	s.mu.Unlock()
	if changed {
		s.log.Warn(msg, "error", err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (s *Scaler) handleAdvisory(ctx context.Context, m jetstream.Msg) {
	var a advisory
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.Stream == "" || a.StreamSeq == 0 {
		_ = m.Term() // not an advisory we understand; nothing to dead-letter
		return
	}
	if s.handleRedriveAdvisory(ctx, m, a) {
		return
	}
	t, ok := s.topicOf(ctx, a.Stream)
	if !ok {
		_ = m.Ack() // not a Hot Topic stream
		return
	}
	letter := provision.DeadLetter{
		App:            a.Consumer,
		Topic:          t,
		Reason:         fmt.Sprintf("max deliveries (%d) reached with no sidecar left to dead-letter it", a.Deliveries),
		Deliveries:     a.Deliveries,
		StreamSequence: a.StreamSeq,
	}
	orig, err := s.js.Stream(ctx, a.Stream)
	if err == nil {
		var raw *jetstream.RawStreamMsg
		raw, err = orig.GetMsg(ctx, a.StreamSeq)
		if err == nil {
			letter.Header, letter.Data = raw.Header, raw.Data
		}
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		letter.Reason += "; the event had already left its stream, so the letter carries no payload"
	} else if err != nil {
		s.log.Warn("dead-lettering: cannot read the event; will retry", "stream", a.Stream, "seq", a.StreamSeq, "error", err)
		_ = m.NakWithDelay(2 * time.Second)
		return
	}
	if _, err := provision.PublishDeadLetter(ctx, s.js, letter, s.o.streams); err != nil {
		s.log.Warn("dead-lettering failed; will retry", "stream", a.Stream, "seq", a.StreamSeq, "error", err)
		_ = m.NakWithDelay(2 * time.Second)
		return
	}
	_ = m.Ack()
	s.metrics.deadLetters.Inc()
	s.log.Info("dead-lettered an event whose deliveries ran out", "app_guid", a.Consumer,
		"topic", t, "stream_seq", a.StreamSeq, "deliveries", a.Deliveries)
}

// topicOf finds the topic a stream stores: from the mappings, else from the
// stream's own metadata (the mapping may be gone by now).
func (s *Scaler) topicOf(ctx context.Context, stream string) (string, bool) {
	s.mu.Lock()
	t, ok := s.streamTopics[stream]
	s.mu.Unlock()
	if ok {
		return t, true
	}
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return "", false
	}
	t = st.CachedInfo().Config.Metadata[provision.MetaTopic]
	return t, t != ""
}
