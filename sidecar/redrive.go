package sidecar

// The sidecar's side of the per-app path (docs/design.md, "Dead letters,
// redrive and replay"): for every mapped topic it also pulls from its own
// consumer on HOTTOPIC_REDRIVE, whose filter is the literal subject
// hottopic.redrive.<app-guid>.<topic>. Those events are delivered like any
// other; once one is settled, the dead letter it was redriven from is deleted
// and the settlement is announced on hottopic.settled.<app-guid>.

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/sidecar/internal/pull"
)

// attachRedrive makes this app's consumer of topic t on the per-app stream
// (creating the stream if missing) and pulls from it; it retries until it can.
func (r *runner) attachRedrive(ctx context.Context, t string, ts *topicState) {
	defer r.wg.Done()
	name := topic.RedriveConsumerName(r.appGUID, t)
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		cur := r.cur
		r.mu.Unlock()
		if cur == nil || ctx.Err() != nil {
			return
		}
		c, err := provision.EnsureRedriveConsumer(ctx, r.js, r.appGUID, t, cur.Settings, r.e.streams)
		if err == nil {
			info := c.CachedInfo()
			r.mu.Lock()
			if ctx.Err() != nil || r.cur == nil {
				r.mu.Unlock()
				return
			}
			var p *pull.Puller
			p, err = pull.Start(r.nc, pull.Config{
				Topic: t, Stream: topic.RedriveStream, Consumer: name, MaxDeliver: info.Config.MaxDeliver,
				Window: window(r.cur.Concurrency), AckWait: min(info.Config.AckWait, time.Duration(r.cur.TimeoutSeconds)*time.Second),
			}, r.e.jobs, func(code, desc string) {
				r.log.Warn("pull request ended by the server", "topic", t, "stream", topic.RedriveStream, "status", code, "description", desc)
			})
			if err == nil {
				ts.redrive = p
			}
			r.mu.Unlock()
			if err == nil {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == 0 {
			r.log.Warn("cannot set up this app's redrive consumer; retrying", "topic", t, "stream", topic.RedriveStream, "consumer", name, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(attachRetry):
		}
	}
}

// publishDeadLetter stores the dead letter of m. An event from the per-app
// path keeps its history (provision.AgainDeadLetterMsg).
func (e *engine) publishDeadLetter(ctx context.Context, m *pull.Msg, md *nats.MsgMetadata, t, reason string) error {
	if md.Stream != topic.RedriveStream {
		_, err := provision.PublishDeadLetter(ctx, e.js, provision.DeadLetter{
			App: e.appGUID, Topic: t, Reason: reason, Deliveries: md.NumDelivered,
			StreamSequence: md.Sequence.Stream, Header: m.Header, Data: m.Data,
		}, e.streams)
		return err
	}
	_, err := provision.PublishAgainDeadLetter(ctx, e.js,
		provision.AgainDeadLetterMsg(e.appGUID, t, m.Header, m.Data, reason, md.NumDelivered, md.Sequence.Stream), e.streams)
	return err
}

// settled is called once m was taken by the app (failure "") or
// dead-lettered again, before it is acked or terminated: an event from the
// per-app path that came from a dead letter removes that letter (a crash
// before the ack then means a second delivery, never a lost event), and the
// outcome is announced for `hottopic redrive`.
func (e *engine) settled(m *pull.Msg, md *nats.MsgMetadata, failure string) {
	if md.Stream != topic.RedriveStream {
		return
	}
	seq, _ := strconv.ParseUint(m.Header.Get(provision.HeaderDeadLetter), 10, 64)
	if seq > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), publishWait)
		if err := provision.DeleteDeadLetter(ctx, e.js, seq, m.Header.Get(provision.HeaderDeadLetterID)); err != nil {
			e.log.Warn("cannot remove the redriven dead letter", "dead_letter", seq, "error", err)
		}
		cancel()
	}
	note := &nats.Msg{Subject: topic.SettledSubject(e.appGUID), Header: nats.Header{}}
	note.Header.Set(provision.HeaderDeadLetter, strconv.FormatUint(seq, 10))
	note.Header.Set("Hottopic-Redrive-Sequence", strconv.FormatUint(md.Sequence.Stream, 10))
	if failure != "" {
		note.Header.Set(provision.HeaderReason, failure)
	}
	_ = e.js.Conn().PublishMsg(note)
}
