package scaler

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// The per-app path (topic.RedriveStream) counts toward an app's lag, so a
// redrive or replay to an app scaled to zero starts it. Its consumers exist
// only once something was sent to the app alone, so a missing stream or
// consumer there is no lag, not an unknown one.

// watchRedrive adds the per-app stream to the streams read each cycle.
func watchRedrive(watch map[string]string) {
	watch[topic.RedriveStream] = topic.RedrivePrefix + ">"
}

// redriveLag is what waits for app guid on the per-app path: its one
// consumer there carries every topic.
func redriveLag(lg lags, guid string, _ []string) int64 {
	if l, ok, _ := lg.consumerLag(topic.RedriveStream, topic.RedriveConsumerName(guid)); ok {
		return l
	}
	return 0
}

// drainSettled deletes the dead letters that sidecars announced settled on
// hottopic.settled.<app-guid> (kept in provision.SettledStream): a broker
// binding cannot reach HOTTOPIC_DLQ itself. A letter is deleted only if it
// is still the one named and belongs to the app whose subject announced it,
// so an app removes none of another app's letters. Each cycle takes what is
// there now; the rest comes next cycle.
func (s *Scaler) drainSettled(ctx context.Context, r *reconciler) {
	if r.settled == nil {
		c, err := provision.EnsureSettledConsumer(ctx, s.js, s.o.streams)
		if err != nil {
			s.log.Warn("cannot read settled redrives; will retry", "error", err)
			return
		}
		r.settled = c
	}
	for range 16 {
		batch, err := r.settled.FetchNoWait(256)
		if err != nil {
			if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				s.log.Warn("cannot read settled redrives; will retry", "error", err)
			}
			r.settled = nil
			return
		}
		n := 0
		for m := range batch.Messages() {
			n++
			app := strings.TrimPrefix(m.Subject(), topic.SettledPrefix)
			seq, _ := strconv.ParseUint(m.Headers().Get(provision.HeaderDeadLetter), 10, 64)
			if seq > 0 {
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := provision.DeleteDeadLetterOf(dctx, s.js, app, seq, m.Headers().Get(provision.HeaderDeadLetterID))
				cancel()
				if err != nil {
					s.log.Warn("cannot remove a redriven dead letter; will retry", "app_guid", app, "dead_letter", seq, "error", err)
					_ = m.NakWithDelay(deadLetterRetry)
					continue
				}
			}
			_ = m.Ack()
		}
		if n == 0 || batch.Error() != nil {
			return
		}
	}
}
