package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/sidecar/internal/pull"
)

const (
	tickEvery   = 200 * time.Millisecond
	attachRetry = 2 * time.Second
)

// runner starts, changes and stops topic consumption as the mapping changes.
type runner struct {
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	e       *engine
	appGUID string

	mu     sync.Mutex
	cur    *mapping.Mapping
	topics map[string]*topicState
	// redrive pulls what is sent to this app alone, every topic (redrive.go);
	// nil until set up, stopped with the mapping.
	redrive       *pull.Puller
	redriveCancel context.CancelFunc
	wg            sync.WaitGroup
}

type topicState struct {
	cancel context.CancelFunc
	puller *pull.Puller // nil until its consumer is found
}

func newRunner(log *slog.Logger, nc *nats.Conn, js jetstream.JetStream, e *engine, appGUID string) *runner {
	return &runner{log: log, nc: nc, js: js, e: e, appGUID: appGUID, topics: map[string]*topicState{}}
}

// apply makes consumption follow m; nil stops every topic (mapping removed).
func (r *runner) apply(ctx context.Context, m *mapping.Mapping) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m == nil {
		for t, ts := range r.topics {
			r.stopTopic(t, ts)
		}
		r.stopRedrive()
		r.cur = nil
		return
	}
	r.e.configure(m.Settings)
	r.cur = m
	ackWait := time.Duration(m.TimeoutSeconds) * time.Second
	for t, ts := range r.topics {
		if !slices.Contains(m.Topics, t) {
			r.stopTopic(t, ts)
		} else if ts.puller != nil {
			ts.puller.SetWindow(window(m.Concurrency, m.BatchSize))
			ts.puller.SetAckWait(min(ackWait, ts.puller.Config().AckWait))
		}
	}
	if r.redrive != nil {
		r.redrive.SetWindow(window(m.Concurrency, 1)) // redriven events go one per worker
		r.redrive.SetAckWait(min(ackWait, r.redrive.Config().AckWait))
	}
	if r.redriveCancel == nil {
		rctx, cancel := context.WithCancel(ctx)
		r.redriveCancel = cancel
		r.wg.Add(1)
		go r.attachRedrive(rctx)
	}
	for _, t := range m.Topics {
		if _, ok := r.topics[t]; ok {
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		ts := &topicState{cancel: cancel}
		r.topics[t] = ts
		r.wg.Add(1)
		go r.attach(tctx, t, ts)
	}
}

func (r *runner) stopTopic(t string, ts *topicState) {
	ts.cancel()
	if ts.puller != nil {
		ts.puller.Stop()
		r.log.Info("stopped consuming topic", "topic", t)
	}
	delete(r.topics, t)
}

func (r *runner) stopRedrive() {
	if r.redriveCancel != nil {
		r.redriveCancel()
		r.redriveCancel = nil
	}
	if r.redrive != nil {
		r.redrive.Stop()
		r.redrive = nil
	}
}

// attach finds the topic's consumer (made by the scaler, or by us in static
// mode) and starts pulling; it retries until the consumer exists.
func (r *runner) attach(ctx context.Context, t string, ts *topicState) {
	defer r.wg.Done()
	stream, name := topic.StreamName(t), topic.ConsumerName(r.appGUID)
	for attempt := 0; ; attempt++ {
		c, err := r.js.Consumer(ctx, stream, name)
		if err == nil {
			info := c.CachedInfo()
			r.mu.Lock()
			if ctx.Err() != nil || r.cur == nil {
				r.mu.Unlock()
				return
			}
			ackWait := min(info.Config.AckWait, time.Duration(r.cur.TimeoutSeconds)*time.Second)
			p, err := pull.Start(r.nc, pull.Config{
				Topic: t, Stream: stream, Consumer: name, MaxDeliver: info.Config.MaxDeliver,
				Window: window(r.cur.Concurrency, r.cur.BatchSize), AckWait: ackWait,
			}, r.e.jobs, func(code, desc string) {
				r.log.Warn("pull request ended by the server", "topic", t, "status", code, "description", desc)
			})
			if err == nil {
				ts.puller = p
			}
			r.mu.Unlock()
			if err == nil {
				r.e.m.topic(t) // the topic's series exist, at zero, from now on
				r.log.Info("consuming topic", "topic", t, "stream", stream, "consumer", name)
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == 0 {
			msg := "waiting for this app's consumer on the topic's stream"
			if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
				msg = "cannot look up this app's consumer; retrying"
			}
			r.log.Warn(msg, "topic", t, "stream", stream, "consumer", name, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(attachRetry):
		}
	}
}

func (r *runner) pullers() []*pull.Puller {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*pull.Puller, 0, len(r.topics))
	for _, ts := range r.topics {
		if ts.puller != nil {
			out = append(out, ts.puller)
		}
	}
	if r.redrive != nil {
		out = append(out, r.redrive)
	}
	return out
}

// topicNames is the topics currently mapped, for /healthz.
func (r *runner) topicNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.topics))
	for t := range r.topics {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// reset re-pulls on every topic (after a reconnect).
func (r *runner) reset() {
	for _, p := range r.pullers() {
		p.Reset()
	}
}

// tickLoop is the one timer of the hot path: ack-deadline extension, lost
// pull requests and delivery timeouts.
func (r *runner) tickLoop(ctx context.Context) {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, p := range r.pullers() {
				p.Tick(now)
			}
		}
	}
}

// provisionStatic creates the streams and this app's consumers for static mode.
func provisionStatic(ctx context.Context, js jetstream.JetStream, m *mapping.Mapping, so provision.StreamOptions) error {
	if _, err := provision.EnsureDLQStream(ctx, js, so); err != nil {
		return err
	}
	for _, t := range m.Topics {
		if _, err := provision.EnsureMapping(ctx, js, m.AppGUID, m.AppName, t, m.Settings, so); err != nil {
			return err
		}
	}
	return nil
}

// watchMapping follows key <app-guid> of the mapping bucket.
func (r *runner) watchMapping(ctx context.Context) {
	var kv jetstream.KeyValue
	idleSaid := false
	for attempt := 0; ; attempt++ {
		var err error
		kv, err = r.js.KeyValue(ctx, mapping.Bucket)
		if err == nil {
			break
		}
		if attempt == 0 {
			r.log.Info("no event mapping for this app yet (mapping bucket does not exist); idle until the scaler maps one", "bucket", mapping.Bucket, "key", r.appGUID)
			idleSaid = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(attachRetry):
		}
	}
	w, err := kv.Watch(ctx, r.appGUID)
	if err != nil {
		r.log.Error("cannot watch the event mapping", "bucket", mapping.Bucket, "key", r.appGUID, "error", err)
		return
	}
	defer func() { _ = w.Stop() }()
	mapped := false
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if !mapped && !idleSaid {
					r.log.Info("no event mapping for this app yet; idle until the scaler maps one", "bucket", mapping.Bucket, "key", r.appGUID)
					idleSaid = true
				}
				continue
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				m, err := mapping.Decode(e.Value())
				if err != nil {
					r.log.Error("ignoring invalid event mapping; keeping the current one", "key", r.appGUID, "revision", e.Revision(), "error", err)
					continue
				}
				m.AppGUID = r.appGUID
				mapped = true
				r.log.Info("event mapping", "topics", m.Topics, "concurrency", m.Concurrency, "path", m.Path,
					"timeout_seconds", m.TimeoutSeconds, "max_deliver", m.MaxDeliver, "output_topic", m.OutputTopic, "batch_size", m.BatchSize, "batch_wait_ms", m.BatchWaitMS, "revision", e.Revision())
				r.apply(ctx, &m)
			default:
				if mapped {
					r.log.Info("event mapping removed; idle", "key", r.appGUID)
				}
				mapped = false
				r.apply(ctx, nil)
			}
		}
	}
}
