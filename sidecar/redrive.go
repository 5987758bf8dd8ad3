package sidecar

// The sidecar's side of the per-app path (docs/design.md, "Dead letters,
// redrive and replay"): for every mapped topic it also pulls from its own
// consumer on HOTTOPIC_REDRIVE (once one exists), whose filter is the literal
// subject hottopic.redrive.<app-guid>.<topic>. Those events are delivered like any
// other; once one is settled, the dead letter it was redriven from is deleted
// and the settlement is announced on hottopic.settled.<app-guid>.

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/sidecar/internal/pull"
)

// attachRedrive pulls from this app's consumer of topic t on the per-app
// stream. The consumer is made by `hottopic redrive` or `replay` on first
// use, so it is looked up once, then again only when one of them says it is
// ready (or after a lookup error): no polling.
func (r *runner) attachRedrive(ctx context.Context, t string, ts *topicState) {
	defer r.wg.Done()
	name := topic.RedriveConsumerName(r.appGUID, t)
	ready := make(chan *nats.Msg, 1)
	sub, err := r.nc.ChanSubscribe(topic.RedriveReadySubject(r.appGUID), ready)
	if err == nil {
		defer func() { _ = sub.Unsubscribe() }()
	}
	for attempt := 0; ; attempt++ {
		c, err := r.js.Consumer(ctx, topic.RedriveStream, name)
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
				Window: window(r.cur.Concurrency, 1), AckWait: min(info.Config.AckWait, time.Duration(r.cur.TimeoutSeconds)*time.Second),
			}, r.e.jobs, func(code, desc string) {
				r.log.Warn("pull request ended by the server", "topic", t, "stream", topic.RedriveStream, "status", code, "description", desc)
			})
			if err == nil {
				ts.redrive = p
			}
			r.mu.Unlock()
			if err == nil {
				r.log.Info("consuming events sent to this app alone", "topic", t, "stream", topic.RedriveStream, "consumer", name)
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		var retry <-chan time.Time
		if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			if attempt == 0 {
				r.log.Warn("cannot look up this app's redrive consumer; retrying", "topic", t, "consumer", name, "error", err)
			}
			retry = time.After(attachRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-ready:
		case <-retry:
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
