package sidecar

// The sidecar's side of the per-app path (docs/design.md, "Dead letters,
// redrive and replay"): while the app is mapped it also pulls from its one
// consumer on HOTTOPIC_REDRIVE (once one exists), named by its GUID and
// filtered on hottopic.redrive.<app-guid>.>; an event's topic is the rest of
// its subject. Those events are delivered like any other; once one is
// settled, the settlement is announced on hottopic.settled.<app-guid> (kept
// by the scaler's HOTTOPIC_SETTLED stream, which deletes the dead letter it
// was redriven from), and a sidecar whose credentials reach HOTTOPIC_DLQ
// deletes that letter itself at once.

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

// attachRedrive pulls from this app's consumer on the per-app stream. The
// consumer is made by `hottopic redrive` or `replay` on first use, so it is
// looked up once, then again only when one of them says it is ready (or
// after a lookup error): no polling.
func (r *runner) attachRedrive(ctx context.Context) {
	defer r.wg.Done()
	name := topic.RedriveConsumerName(r.appGUID)
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
			// No Topic: the per-app puller carries every topic (engine.topicOf).
			p, err = pull.Start(r.nc, pull.Config{
				Stream: topic.RedriveStream, Consumer: name, MaxDeliver: info.Config.MaxDeliver,
				Window: window(r.cur.Concurrency, 1), AckWait: min(info.Config.AckWait, time.Duration(r.cur.TimeoutSeconds)*time.Second),
			}, r.e.jobs, func(code, desc string) {
				r.log.Warn("pull request ended by the server", "stream", topic.RedriveStream, "status", code, "description", desc)
			})
			if err == nil {
				r.redrive = p
			}
			r.mu.Unlock()
			if err == nil {
				r.log.Info("consuming events sent to this app alone", "stream", topic.RedriveStream, "consumer", name)
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		var retry <-chan time.Time
		if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			if attempt == 0 {
				r.log.Warn("cannot look up this app's redrive consumer; retrying", "consumer", name, "error", err)
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

// topicOf is the topic of m: its puller's, or for the per-app puller the
// rest of its subject.
func (e *engine) topicOf(m *pull.Msg) string {
	p := m.Puller()
	if t := p.Topic(); t != "" {
		return t
	}
	if t, ok := topic.RedriveTopic(e.appGUID, m.Subject); ok {
		return t
	}
	return m.Subject
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
// outcome is announced for `hottopic redrive` and the scaler. A broker
// binding (scoped credentials) cannot reach HOTTOPIC_DLQ — a stream's
// messages cannot be granted per app — so the scaler deletes the letter
// from the announcement, which HOTTOPIC_SETTLED keeps until it has.
func (e *engine) settled(m *pull.Msg, md *nats.MsgMetadata, failure string) {
	if md.Stream != topic.RedriveStream {
		return
	}
	seq, _ := strconv.ParseUint(m.Header.Get(provision.HeaderDeadLetter), 10, 64)
	if seq > 0 && !e.scoped {
		ctx, cancel := context.WithTimeout(context.Background(), publishWait)
		if err := provision.DeleteDeadLetter(ctx, e.js, seq, m.Header.Get(provision.HeaderDeadLetterID)); err != nil {
			e.log.Warn("cannot remove the redriven dead letter", "dead_letter", seq, "error", err)
		}
		cancel()
	}
	note := &nats.Msg{Subject: topic.SettledSubject(e.appGUID), Header: nats.Header{}}
	note.Header.Set(provision.HeaderDeadLetter, strconv.FormatUint(seq, 10))
	note.Header.Set(provision.HeaderDeadLetterID, m.Header.Get(provision.HeaderDeadLetterID))
	note.Header.Set("Hottopic-Redrive-Sequence", strconv.FormatUint(md.Sequence.Stream, 10))
	if failure != "" {
		note.Header.Set(provision.HeaderReason, failure)
	}
	_ = e.js.Conn().PublishMsg(note)
}
