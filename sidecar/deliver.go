package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/deadletter"
	"github.com/hottopic-io/hottopic/mapping"
	"github.com/hottopic-io/hottopic/provision"
	"github.com/hottopic-io/hottopic/sidecar/pull"
)

const (
	backoffBase = time.Second
	backoffMax  = 60 * time.Second
	// maxRetryAfter bounds an app's Retry-After (a typo should not park an event for a year).
	maxRetryAfter = 24 * time.Hour
	publishWait   = 10 * time.Second
)

// settings is the delivery configuration in force; swapped whole on a mapping change.
type settings struct {
	url         string
	timeout     time.Duration
	maxDeliver  int
	outputTopic string
}

// engine delivers held events to the app with a fixed pool of workers.
type engine struct {
	log     *slog.Logger
	m       *metrics
	js      jetstream.JetStream
	client  *http.Client
	appGUID string
	appPort int
	streams provision.StreamOptions
	jobs    chan *pull.Msg
	set     atomic.Pointer[settings]

	// deliverCtx is the parent of every delivery; cancelled when shutdown
	// can wait no longer.
	deliverCtx    context.Context
	cancelDeliver context.CancelFunc
	releasing     atomic.Bool // shutdown: nak instead of delivering

	mu      sync.Mutex
	workers []*worker
	wg      sync.WaitGroup
}

// worker is one delivery slot; the ticker reads it to enforce timeouts.
type worker struct {
	quit chan struct{}

	mu       sync.Mutex
	cancel   context.CancelFunc
	deadline time.Time
	timedOut bool
}

func newEngine(log *slog.Logger, m *metrics, js jetstream.JetStream, appGUID string, appPort int, streams provision.StreamOptions) *engine {
	tr := &http.Transport{
		Proxy:                 nil, // the app is local; never go through HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: 0,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &engine{
		log: log, m: m, js: js, appGUID: appGUID, appPort: appPort, streams: streams,
		client: &http.Client{
			Transport: tr,
			// A redirect is an answer, not something to follow with a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		jobs:          make(chan *pull.Msg, 4096),
		deliverCtx:    ctx,
		cancelDeliver: cancel,
	}
}

// configure applies a mapping's delivery settings and sizes the pool.
func (e *engine) configure(s mapping.Settings) {
	e.set.Store(&settings{
		url:         "http://127.0.0.1:" + strconv.Itoa(e.appPort) + s.Path,
		timeout:     time.Duration(s.TimeoutSeconds) * time.Second,
		maxDeliver:  s.MaxDeliver,
		outputTopic: s.OutputTopic,
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
	for {
		select {
		case <-w.quit:
			return
		default:
		}
		select {
		case m := <-e.jobs:
			e.handle(w, m)
		case <-w.quit:
			return
		}
	}
}

// tick enforces delivery timeouts; the one timer for all deliveries.
func (e *engine) tick(now time.Time) {
	e.mu.Lock()
	ws := append([]*worker(nil), e.workers...)
	e.mu.Unlock()
	for _, w := range ws {
		w.mu.Lock()
		if w.cancel != nil && !w.timedOut && now.After(w.deadline) {
			w.timedOut = true
			w.cancel()
		}
		w.mu.Unlock()
	}
}

// outcome of one attempt.
type outcome struct {
	status     int
	err        error // transport error or timeout
	retryAfter time.Duration
	body       []byte // only when an output topic is set
	header     http.Header
}

func (e *engine) handle(w *worker, m *pull.Msg) {
	p := m.Puller()
	defer p.Done(m)
	if e.releasing.Load() || p.Stopped() {
		_ = m.Nak()
		e.m.released.Inc()
		return
	}
	md, err := m.Metadata()
	if err != nil { // not a JetStream message: nothing to redeliver
		e.log.Error("dropping a message that is not a JetStream delivery", "topic", p.Topic(), "error", err)
		_ = m.Term()
		return
	}
	s := e.set.Load()
	topic := p.Topic()
	if md.NumDelivered > 1 {
		e.m.redeliveries.Inc()
	}

	ctx, cancel := context.WithCancel(e.deliverCtx)
	start := time.Now()
	w.mu.Lock()
	w.cancel, w.deadline, w.timedOut = cancel, start.Add(s.timeout), false
	w.mu.Unlock()
	e.m.inFlight.Inc()
	out := e.post(ctx, s, topic, m, md)
	e.m.inFlight.Dec()
	e.m.latency.Observe(time.Since(start).Seconds())
	w.mu.Lock()
	timedOut := w.timedOut
	w.cancel = nil
	w.mu.Unlock()
	cancel()

	if out.err != nil && timedOut {
		out.err = fmt.Errorf("timeout after %s", s.timeout)
	}
	switch {
	case out.err != nil && e.releasing.Load() && !timedOut:
		_ = m.Nak() // shutdown cut it short: another instance takes it now
		e.m.released.Inc()
	case out.err == nil && out.status >= 200 && out.status < 300:
		if s.outputTopic != "" && len(out.body) > 0 {
			if err := e.publishOutput(s.outputTopic, m, md, out); err != nil {
				e.m.pubOutErr.Inc()
				e.retry(m, md, s, topic, "publishing the response to output topic "+s.outputTopic+" failed: "+err.Error(), 0)
				return
			}
			e.m.pubOutOK.Inc()
		}
		_ = m.Ack()
		e.m.succeeded.Inc()
	case out.err != nil:
		e.retry(m, md, s, topic, out.err.Error(), 0)
	case out.status == http.StatusRequestTimeout || out.status == http.StatusTooManyRequests || out.status >= 500 || out.status < 400:
		e.retry(m, md, s, topic, statusText(out.status), out.retryAfter)
	default: // any other 4xx: the app says this event can never succeed
		e.deadLetter(m, md, s, topic, statusText(out.status), false)
	}
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
	e.m.retried.Inc()
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
	_, err := deadletter.Publish(ctx, e.js, deadletter.Letter{
		App: e.appGUID, Topic: topic, Reason: reason, Deliveries: md.NumDelivered,
		StreamSequence: md.Sequence.Stream, Header: m.Header, Data: m.Data,
	}, e.streams)
	if err != nil {
		// Keep the event: a later attempt (or the scaler, from the
		// max-deliveries advisory) dead-letters it.
		_ = m.NakWithDelay(backoff(md.NumDelivered))
		e.m.retried.Inc()
		e.log.Error("cannot dead-letter event, will retry", "topic", topic, "seq", md.Sequence.Stream, "reason", reason, "error", err)
		return
	}
	_ = m.Term()
	e.m.deadLettered.Inc()
	if exhausted {
		e.m.dlqExhausted.Inc()
	} else {
		e.m.dlqRejected.Inc()
	}
	e.log.Warn("event dead-lettered", "topic", topic, "seq", md.Sequence.Stream, "deliveries", md.NumDelivered, "reason", reason)
}

// ceID is the CloudEvents id: the publisher's Nats-Msg-Id, else <stream>-<seq>.
func ceID(m *nats.Msg, md *nats.MsgMetadata) string {
	if id := m.Header.Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	return md.Stream + "-" + strconv.FormatUint(md.Sequence.Stream, 10)
}

var (
	hdrContentType = "Content-Type"
	octetStream    = []string{"application/octet-stream"}
	specVersion    = []string{"1.0"}
	defaultCEType  = []string{"hottopic.event"}
)

func (e *engine) post(ctx context.Context, s *settings, topic string, m *pull.Msg, md *nats.MsgMetadata) outcome {
	h := make(http.Header, 12)
	h["Ce-Specversion"] = specVersion
	h["Ce-Id"] = []string{ceID(m.Msg, md)}
	h["Ce-Source"] = []string{"hottopic:" + topic}
	h["Ce-Type"] = defaultCEType
	h["Ce-Subject"] = []string{topic}
	h["Ce-Time"] = []string{md.Timestamp.UTC().Format(time.RFC3339Nano)}
	h[hdrContentType] = octetStream
	for k, v := range m.Header {
		if len(v) == 0 {
			continue
		}
		lk := strings.ToLower(k)
		switch {
		case strings.HasPrefix(lk, "ce-"), lk == "content-type", lk == "traceparent", lk == "tracestate":
			h[http.CanonicalHeaderKey(k)] = v // the message's own values win
		}
	}
	h["Hottopic-Topic"] = []string{topic}
	h["Hottopic-Delivery"] = []string{strconv.FormatUint(md.NumDelivered, 10)}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(m.Data))
	if err != nil {
		return outcome{err: err}
	}
	req.Header = h
	resp, err := e.client.Do(req)
	if err != nil {
		return outcome{err: shortError(err)}
	}
	defer resp.Body.Close()
	out := outcome{status: resp.StatusCode}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if ok && s.outputTopic != "" {
		limit := e.js.Conn().MaxPayload()
		out.body, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return outcome{err: shortError(err)}
		}
		if int64(len(out.body)) > limit {
			return outcome{err: fmt.Errorf("response body larger than the NATS payload limit (%d bytes)", limit)}
		}
		out.header = resp.Header
	} else {
		// Drain (bounded) so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	}
	if !ok {
		out.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	}
	return out
}

// shortError drops the request URL that net/http wraps around errors.
func shortError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			if errors.Is(inner, context.Canceled) {
				return errors.New("delivery cancelled")
			}
			return fmt.Errorf("app unreachable: %v", inner)
		}
	}
	return err
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
	msg := &nats.Msg{Subject: outTopic, Header: nats.Header{}, Data: out.body}
	ct := out.header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	msg.Header.Set("Content-Type", ct)
	for k, v := range out.header {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "ce-") && len(v) > 0 {
			msg.Header[lk] = v
		}
	}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := m.Header.Get(k); v != "" {
			msg.Header.Set(k, v)
		}
	}
	// One output per input event, even when a retry publishes again.
	msg.Header.Set(jetstream.MsgIDHeader, "out:"+e.appGUID+":"+md.Stream+":"+strconv.FormatUint(md.Sequence.Stream, 10))
	ctx, cancel := context.WithTimeout(context.Background(), publishWait)
	defer cancel()
	_, err := publish(ctx, e.js, msg, e.streams)
	return err
}

// publish stores msg, creating the topic's stream if it does not exist yet.
func publish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, so provision.StreamOptions) (*jetstream.PubAck, error) {
	ack, err := js.PublishMsg(ctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if _, err = provision.EnsureTopicStream(ctx, js, msg.Subject, so); err != nil {
			return nil, err
		}
		ack, err = js.PublishMsg(ctx, msg)
	}
	return ack, err
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
	e.cancelDeliver()
}
