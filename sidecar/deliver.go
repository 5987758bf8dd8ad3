package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/ce"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/sidecar/internal/appconn"
	"github.com/hottopic-io/hottopic/sidecar/internal/pull"
)

const (
	backoffBase = time.Second
	backoffMax  = 60 * time.Second
	// maxRetryAfter bounds an app's Retry-After (a typo should not park an event for a year).
	maxRetryAfter = 24 * time.Hour
	publishWait   = 10 * time.Second
	dialTimeout   = 5 * time.Second
)

// settings is the delivery configuration in force; swapped whole on a mapping change.
type settings struct {
	path        string // request URI, escaped as net/http would
	pathErr     error
	timeout     time.Duration
	maxDeliver  int
	outputTopic string
	batchSize   int           // > 1: batch mode (batch.go)
	batchWait   time.Duration // how long a partial batch may wait to fill
}

// engine delivers held events to the app with a fixed pool of workers.
type engine struct {
	log     *slog.Logger
	m       *metrics
	js      jetstream.JetStream
	appGUID string
	appAddr string // 127.0.0.1:$PORT
	streams provision.StreamOptions
	outputs *provision.StreamCache // topics known to have a stream
	// scoped: a broker binding's credentials (they carry an inbox prefix),
	// which reach no stream's messages: the scaler deletes redriven letters.
	scoped    bool
	jobs      chan *pull.Msg
	set       atomic.Pointer[settings]
	releasing atomic.Bool // shutdown: nak instead of delivering
	draining  atomic.Bool // shutdown began: a partial batch waits no more
	drainCh   chan struct{}
	fillTurn  chan struct{} // holds a token while one worker takes events for a batch (batch.go)
	// unknownIDSaid: a batchItemFailures id that named no event was logged
	unknownIDSaid atomic.Bool

	mu      sync.Mutex
	workers []*worker
	conns   map[*appconn.Conn]struct{} // every worker's, quitting ones too
	aborted bool                       // shutdown can wait no longer
	wg      sync.WaitGroup
}

// worker is one delivery slot with its own connection to the app and
// scratch space for request headers.
type worker struct {
	quit chan struct{}
	conn *appconn.Conn
	hdr  []byte

	topics map[string]*ce.Topic // each topic's CloudEvents mapping

	batch // batch mode's state (batch.go)
}

func newEngine(log *slog.Logger, m *metrics, js jetstream.JetStream, appGUID string, appPort int, streams provision.StreamOptions) *engine {
	return &engine{
		log: log, m: m, js: js, appGUID: appGUID, streams: streams,
		appAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(appPort)),
		outputs:  provision.NewStreamCache(js),
		scoped:   js.Conn().Opts.InboxPrefix != "",
		jobs:     make(chan *pull.Msg, 4096),
		drainCh:  make(chan struct{}),
		fillTurn: make(chan struct{}, 1),
		conns:    map[*appconn.Conn]struct{}{},
	}
}

// configure applies a mapping's delivery settings and sizes the pool.
func (e *engine) configure(s mapping.Settings) {
	path, pathErr := s.Path, error(nil)
	if u, err := url.Parse("http://app" + s.Path); err != nil {
		pathErr = fmt.Errorf("bad path %q: %v", s.Path, err)
	} else {
		path = u.RequestURI()
	}
	e.set.Store(&settings{
		path:        path,
		pathErr:     pathErr,
		timeout:     time.Duration(s.TimeoutSeconds) * time.Second,
		maxDeliver:  s.MaxDeliver,
		outputTopic: s.OutputTopic,
		batchSize:   s.BatchSize,
		batchWait:   time.Duration(s.BatchWaitMS) * time.Millisecond,
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.workers) < s.Concurrency {
		w := &worker{quit: make(chan struct{})}
		e.workers = append(e.workers, w)
		e.wg.Add(1)
		go e.work(w)
	}
	for len(e.workers) > s.Concurrency {
		w := e.workers[len(e.workers)-1]
		e.workers = e.workers[:len(e.workers)-1]
		close(w.quit) // finishes its current delivery first
	}
}

func (e *engine) work(w *worker) {
	defer e.wg.Done()
	w.conn = appconn.New(e.appAddr, dialTimeout)
	e.mu.Lock()
	e.conns[w.conn] = struct{}{}
	if e.aborted {
		w.conn.Abort()
	}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.conns, w.conn)
		e.mu.Unlock()
		w.conn.Close()
	}()
	for {
		if m := w.carry; m != nil { // taken while filling the last batch, not part of it
			w.carry = nil
			e.dispatch(w, m, false)
			continue
		}
		select {
		case <-w.quit:
			return
		default:
		}
		// In batch mode a worker takes its turn before its first event (see
		// batch.go), so no event waits in a worker's hands while another
		// worker's partial batch waits out batch-wait for it.
		turn := e.set.Load().batchSize > 1
		if turn {
			select {
			case e.fillTurn <- struct{}{}:
			case <-w.quit:
				return
			}
		}
		select {
		case m := <-e.jobs:
			e.dispatch(w, m, turn)
		case <-w.quit:
			if turn {
				<-e.fillTurn
			}
			return
		}
	}
}

// drain ends the filling of batches: shutdown has stopped pulling.
func (e *engine) drain() {
	if e.draining.CompareAndSwap(false, true) {
		close(e.drainCh)
	}
}

// dispatch delivers m alone (batch-size 1: the path of one event per POST)
// or as the first event of a batch. turn: the worker holds the fill turn.
func (e *engine) dispatch(w *worker, m *pull.Msg, turn bool) {
	if e.set.Load().batchSize > 1 {
		e.handleBatch(w, m, turn)
		return
	}
	if turn { // batch-size went down to 1 meanwhile
		<-e.fillTurn
	}
	e.handle(w, m)
}

// abort makes every delivery in progress, and any later one, fail at once:
// shutdown's grace period is over.
func (e *engine) abort() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.aborted = true
	for c := range e.conns {
		c.Abort()
	}
}

// outcome of one attempt.
type outcome struct {
	status     int
	err        error // transport error or timeout
	timedOut   bool
	retryAfter time.Duration
	resp       *appconn.Response // for the output topic: valid until the worker's next post
	invalid    error             // the message is no valid CloudEvent: never delivered
}

func (e *engine) handle(w *worker, m *pull.Msg) {
	p := m.Puller()
	if !e.attempt(w, p, m) {
		p.Done(m)
	}
}

// attempt delivers m once and settles it; true when it was acked (and so
// already released through AckDone).
func (e *engine) attempt(w *worker, p *pull.Puller, m *pull.Msg) (acked bool) {
	tm := e.m.topic(e.topicOf(m))
	if e.releasing.Load() { // the grace period is over
		_ = m.Nak()
		tm.released.Inc()
		return false
	}
	md, err := m.Metadata()
	if err != nil { // not a JetStream message: nothing to redeliver
		e.log.Error("dropping a message that is not a JetStream delivery", "topic", e.topicOf(m), "error", err)
		_ = m.Term()
		return false
	}
	s := e.set.Load()
	topic := e.topicOf(m)
	if md.NumDelivered > 1 {
		tm.redeliveries.Inc()
	}

	start := time.Now()
	tm.inFlight.Inc()
	out := e.post(w, s, topic, m, md, start.Add(s.timeout))
	tm.inFlight.Dec()
	tm.latency.Observe(time.Since(start).Seconds())

	if out.err != nil && out.timedOut {
		out.err = fmt.Errorf("timeout after %s", s.timeout)
	}
	switch {
	case out.invalid != nil: // retrying cannot help
		e.deadLetter(m, md, s, topic, out.invalid.Error(), false)
	case out.err != nil && e.releasing.Load() && !out.timedOut:
		_ = m.Nak() // shutdown cut it short: another instance takes it now
		tm.released.Inc()
	case out.err == nil && out.status >= 200 && out.status < 300:
		if s.outputTopic != "" && len(out.resp.Body) > 0 {
			if err := e.publishOutput(s.outputTopic, m, md, out); err != nil {
				e.m.topic(s.outputTopic).pubOutErr.Inc()
				e.retry(m, md, s, topic, "publishing the response to output topic "+s.outputTopic+" failed: "+err.Error(), 0)
				return false
			}
			e.m.topic(s.outputTopic).pubOutOK.Inc()
		}
		e.settled(m, md, "")
		_ = p.AckDone(m)
		tm.succeeded.Inc()
		return true
	case out.err != nil:
		e.retry(m, md, s, topic, out.err.Error(), 0)
	case out.status == http.StatusRequestTimeout || out.status == http.StatusTooManyRequests || out.status >= 500 || out.status < 400:
		e.retry(m, md, s, topic, out.failure(), out.retryAfter)
	default: // any other 4xx: the app says this event can never succeed
		e.deadLetter(m, md, s, topic, out.failure(), false)
	}
	return false
}

// failure is the reason of a non-2xx answer: its status, and the start of
// its body (what the app said went wrong), bounded and printable.
func (o outcome) failure() string {
	r := statusText(o.status)
	if o.resp != nil {
		if t := o.resp.ErrorText(); t != "" {
			r += ": " + t
		}
	}
	return r
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return "HTTP " + strconv.Itoa(code) + " " + t
	}
	return "HTTP " + strconv.Itoa(code)
}

// maxDeliver is the attempts allowed: the mapping's, or the consumer's own
// limit when that is lower (the server stops redelivering there).
func maxDeliver(p *pull.Puller, s *settings) uint64 {
	n := s.maxDeliver
	if c := p.MaxDeliver(); c > 0 && c < n {
		n = c
	}
	return uint64(n)
}

func (e *engine) retry(m *pull.Msg, md *nats.MsgMetadata, s *settings, topic, reason string, retryAfter time.Duration) {
	if md.NumDelivered >= maxDeliver(m.Puller(), s) {
		e.deadLetter(m, md, s, topic, fmt.Sprintf("max deliveries (%d) reached; last: %s", md.NumDelivered, reason), true)
		return
	}
	delay := backoff(md.NumDelivered)
	if retryAfter > 0 {
		delay = min(retryAfter, maxRetryAfter)
	}
	_ = m.NakWithDelay(delay)
	e.m.topic(topic).retried.Inc()
	e.log.Info("delivery failed, will retry", "topic", topic, "seq", md.Sequence.Stream, "attempt", md.NumDelivered, "reason", reason, "retry_in", delay.String())
}

// backoff is ≈1 s, 2 s, 4 s… after the given attempt, capped at 60 s.
func backoff(attempt uint64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	if attempt > 7 {
		return backoffMax
	}
	return min(backoffBase<<(attempt-1), backoffMax)
}

func (e *engine) deadLetter(m *pull.Msg, md *nats.MsgMetadata, s *settings, topic, reason string, exhausted bool) {
	ctx, cancel := context.WithTimeout(context.Background(), publishWait)
	defer cancel()
	err := e.publishDeadLetter(ctx, m, md, topic, reason)
	if err != nil {
		// Keep the event: a later attempt (or the scaler, from the
		// max-deliveries advisory) dead-letters it.
		_ = m.NakWithDelay(backoff(md.NumDelivered))
		e.m.topic(topic).retried.Inc()
		e.log.Error("cannot dead-letter event, will retry", "topic", topic, "seq", md.Sequence.Stream, "reason", reason, "error", err)
		return
	}
	e.settled(m, md, reason)
	_ = m.Term()
	e.m.topic(topic).deadLettered.Inc()
	if exhausted {
		e.m.topic(topic).dlqExhausted.Inc()
	} else {
		e.m.topic(topic).dlqRejected.Inc()
	}
	e.log.Warn("event dead-lettered", "topic", topic, "seq", md.Sequence.Stream, "deliveries", md.NumDelivered, "reason", reason)
}

// appendHeaders writes the event's request headers: the CloudEvents HTTP
// binding of the message (internal/ce), then Hot Topic's own.
func (w *worker) appendHeaders(dst []byte, topic string, m *nats.Msg, md *nats.MsgMetadata) ([]byte, error) {
	t := w.topics[topic]
	if t == nil {
		if w.topics == nil {
			w.topics = map[string]*ce.Topic{}
		}
		t = ce.NewTopic(topic)
		w.topics[topic] = t
	}
	dst, err := t.AppendHTTP(dst, m.Header, m.Data, ce.Origin{Stream: md.Stream, Seq: md.Sequence.Stream, Time: md.Timestamp})
	if err != nil {
		return dst, err
	}
	dst = append(dst, "Hottopic-Topic: "...)
	dst = append(dst, topic...)
	dst = append(dst, "\r\nHottopic-Delivery: "...)
	dst = strconv.AppendUint(dst, md.NumDelivered, 10)
	return append(dst, "\r\n"...), nil
}

func (e *engine) post(w *worker, s *settings, topic string, m *pull.Msg, md *nats.MsgMetadata, deadline time.Time) outcome {
	if s.pathErr != nil {
		return outcome{err: s.pathErr}
	}
	h, err := w.appendHeaders(w.hdr[:0], topic, m.Msg, md)
	w.hdr = h
	if err != nil {
		return outcome{invalid: err}
	}
	var limit int64
	if s.outputTopic != "" {
		limit = e.js.Conn().MaxPayload()
	}
	resp, err := w.conn.Post(deadline, s.path, h, m.Data, limit)
	return answered(resp, err, func() error {
		return fmt.Errorf("response body larger than the NATS payload limit (%d bytes)", limit)
	})
}

// answered is the outcome of one POST to the app (a single event or a
// batch); tooLarge words an answer over the body limit.
func answered(resp *appconn.Response, err error, tooLarge func() error) outcome {
	switch {
	case err == nil:
	case errors.Is(err, appconn.ErrBodyTooLarge):
		return outcome{err: tooLarge()}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return outcome{err: err, timedOut: true}
	case errors.Is(err, appconn.ErrAborted), errors.Is(err, appconn.ErrBadResponse):
		return outcome{err: err}
	default:
		return outcome{err: fmt.Errorf("app unreachable: %v", err)}
	}
	out := outcome{status: resp.Status, resp: resp}
	if resp.Status < 200 || resp.Status >= 300 {
		out.retryAfter = parseRetryAfter(resp.Get("Retry-After"))
	}
	return out
}

func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func (e *engine) publishOutput(outTopic string, m *pull.Msg, md *nats.MsgMetadata, out outcome) error {
	// The body is copied: the worker's connection reuses its buffer.
	msg := &nats.Msg{Subject: outTopic, Header: nats.Header{}, Data: bytes.Clone(out.resp.Body)}
	// The response is an event in the HTTP binding: stored in the NATS one.
	binary := false
	out.resp.VisitHeaders(func(k, v string) {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "ce-") {
			msg.Header[lk] = append(msg.Header[lk], v)
			binary = binary || lk == "ce-specversion"
		}
	})
	if ct := out.resp.Get("Content-Type"); ct != "" {
		msg.Header.Set("Content-Type", ct)
	} else if !binary {
		msg.Header.Set("Content-Type", "application/octet-stream")
	}
	if err := ce.Ingest(msg.Header, msg.Data, true); err != nil {
		return fmt.Errorf("the app's response: %w", err)
	}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := m.Header.Get(k); v != "" {
			msg.Header.Set(k, v)
		}
	}
	// One output per input event, even when a retry publishes again: the
	// stream de-duplicates by Nats-Msg-Id.
	msg.Header.Set(jetstream.MsgIDHeader, "out:"+e.appGUID+":"+md.Stream+":"+strconv.FormatUint(md.Sequence.Stream, 10))
	ctx, cancel := context.WithTimeout(context.Background(), publishWait)
	defer cancel()
	// The stream first (made if missing, as Hot Topic makes a topic's
	// stream), then one publish to it.
	_, err := e.outputs.PublishToTopic(ctx, msg, e.streams)
	return err
}

// stop ends every worker once nothing is held any more.
func (e *engine) stop() {
	e.mu.Lock()
	for _, w := range e.workers {
		close(w.quit)
	}
	e.workers = nil
	e.mu.Unlock()
	e.wg.Wait()
}
