package scaler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// deadLetterRetry is when an advisory that could not be handled comes again.
const deadLetterRetry = 2 * time.Second

// handleRedriveAdvisory dead-letters an event of the per-app path whose
// deliveries ran out with no sidecar alive, as the sidecar would have: a new
// letter with its history, the letter it was redriven from removed, and the
// event taken off the per-app stream. true when the advisory was for it.
func (s *Scaler) handleRedriveAdvisory(ctx context.Context, m jetstream.Msg, a advisory) bool {
	if a.Stream != topic.RedriveStream {
		return false
	}
	c, err := s.js.Consumer(ctx, topic.RedriveStream, a.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		_ = m.Ack() // the app's consumer is gone: nothing to say whose it was
		return true
	}
	if err != nil {
		_ = m.NakWithDelay(deadLetterRetry)
		return true
	}
	app := c.CachedInfo().Config.Metadata[provision.MetaApp]
	st, err := s.js.Stream(ctx, topic.RedriveStream)
	var raw *jetstream.RawStreamMsg
	if err == nil {
		raw, err = st.GetMsg(ctx, a.StreamSeq)
	}
	var t string
	if err == nil {
		t, _ = topic.RedriveTopic(app, raw.Subject) // the app's one consumer carries every topic
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) || app == "" || err == nil && t == "" {
		_ = m.Ack() // settled meanwhile, or not ours
		return true
	}
	if err != nil {
		_ = m.NakWithDelay(deadLetterRetry)
		return true
	}
	reason := fmt.Sprintf("max deliveries (%d) reached with no sidecar left to dead-letter it", a.Deliveries)
	letter := provision.AgainDeadLetterMsg(app, t, raw.Header, raw.Data, reason, a.Deliveries, a.StreamSeq)
	if _, err := provision.PublishAgainDeadLetter(ctx, s.js, letter, s.o.streams); err != nil {
		s.log.Warn("dead-lettering failed; will retry", "stream", a.Stream, "seq", a.StreamSeq, "error", err)
		_ = m.NakWithDelay(deadLetterRetry)
		return true
	}
	if seq, _ := strconv.ParseUint(raw.Header.Get(provision.HeaderDeadLetter), 10, 64); seq > 0 {
		if err := provision.DeleteDeadLetter(ctx, s.js, seq, raw.Header.Get(provision.HeaderDeadLetterID)); err != nil {
			s.log.Warn("cannot remove the redriven dead letter", "dead_letter", seq, "error", err)
		}
	}
	_ = st.DeleteMsg(ctx, a.StreamSeq)
	_ = m.Ack()
	s.metrics.deadLetters.Inc()
	s.log.Info("dead-lettered an event whose deliveries ran out", "app_guid", app, "topic", t, "stream", a.Stream, "stream_seq", a.StreamSeq, "deliveries", a.Deliveries)
	return true
}
