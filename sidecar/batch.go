package sidecar

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hottopic-io/hottopic/internal/ce"
	"github.com/hottopic-io/hottopic/sidecar/internal/pull"
)

// Batch mode (batch-size > 1): a worker takes up to batch-size events of one
// topic, waiting at most batch-wait for a partial batch to fill, and POSTs
// them at once in the CloudEvents HTTP batch mode. Each event keeps its own
// JetStream message: acked, retried or dead-lettered on its own, its ack
// deadline kept extended by its puller while the batch is out. An event
// being redelivered goes alone (a batch of one), so an event that failed
// cannot fail the events it would share a batch with again. One worker
// takes events for a batch at a time (the fill turn, taken before its first
// event): so at most one partial batch waits to fill, and never for an event
// another worker holds.

// batchBodyLimit bounds the app's answer to a batch: batchItemFailures
// naming 1000 ids fits many times over.
const batchBodyLimit = 4 << 20

// batch is a worker's batch-mode state, reused from one batch to the next.
type batch struct {
	carry   *pull.Msg // taken while filling a batch it could not join; next
	items   []batchItem
	body    []byte
	scratch []byte
	timer   *time.Timer
}

type batchItem struct {
	m  *pull.Msg
	md *nats.MsgMetadata
	id string
}

// meta is m's JetStream metadata; a message that has none is terminated and
// released (nothing can redeliver it).
func (e *engine) meta(m *pull.Msg) (*nats.MsgMetadata, bool) {
	md, err := m.Metadata()
	if err != nil {
		p := m.Puller()
		e.log.Error("dropping a message that is not a JetStream delivery", "topic", e.topicOf(m), "error", err)
		_ = m.Term()
		p.Done(m)
		return nil, false
	}
	return md, true
}

// collect fills w.items from first: events of first's topic, new ones only
// (a redelivery goes alone), until batch-size, until batch-wait has passed
// since first was taken, or at once when shutdown has begun.
func (e *engine) collect(w *worker, first *pull.Msg, s *settings) []batchItem {
	w.items = w.items[:0]
	md, ok := e.meta(first)
	if !ok {
		return nil
	}
	w.items = append(w.items, batchItem{m: first, md: md})
	if md.NumDelivered > 1 || first.Puller().Topic() == "" { // the per-app path mixes topics: alone
		return w.items
	}
	var expired <-chan time.Time
	for len(w.items) < s.batchSize {
		var m *pull.Msg
		select {
		case m = <-e.jobs:
		default:
			if s.batchWait <= 0 || e.draining.Load() {
				return w.items
			}
			if expired == nil {
				if w.timer == nil {
					w.timer = time.NewTimer(s.batchWait)
				} else {
					w.timer.Reset(s.batchWait)
				}
				defer w.timer.Stop()
				expired = w.timer.C
			}
			select {
			case m = <-e.jobs:
			case <-expired:
				return w.items
			case <-e.drainCh:
				return w.items
			}
		}
		md, ok := e.meta(m)
		if !ok {
			continue
		}
		if m.Puller() != first.Puller() || md.NumDelivered > 1 {
			w.carry = m
			return w.items
		}
		w.items = append(w.items, batchItem{m: m, md: md})
	}
	return w.items
}

// handleBatch delivers a batch starting with first and settles every event.
// turn: the worker took the fill turn before first; else (first was carried
// over from its last batch) it takes it now.
func (e *engine) handleBatch(w *worker, first *pull.Msg, turn bool) {
	s := e.set.Load()
	// One batch fills at a time: workers splitting the events between
	// partial batches would each wait out batch-wait half full.
	if !turn {
		e.fillTurn <- struct{}{}
	}
	items := e.collect(w, first, s)
	<-e.fillTurn
	if len(items) == 0 {
		return
	}
	p := first.Puller()
	topic := e.topicOf(first)
	tm := e.m.topic(topic)
	settle := func(it batchItem, acked bool) {
		if !acked {
			p.Done(it.m)
		}
	}
	if e.releasing.Load() { // the grace period is over
		for _, it := range items {
			_ = it.m.Nak()
			tm.released.Inc()
			settle(it, false)
		}
		return
	}

	// The body: every valid event; an invalid one is dead-lettered at once.
	t := w.topics[topic]
	if t == nil {
		if w.topics == nil {
			w.topics = map[string]*ce.Topic{}
		}
		t = ce.NewTopic(topic)
		w.topics[topic] = t
	}
	body := append(w.body[:0], '[')
	valid := items[:0]
	var attempt uint64
	for _, it := range items {
		n := len(body)
		if len(valid) > 0 {
			body = append(body, ',')
		}
		var err error
		body, w.scratch, it.id, err = t.AppendBatchItem(body, w.scratch, it.m.Header, it.m.Data,
			ce.Origin{Stream: it.md.Stream, Seq: it.md.Sequence.Stream, Time: it.md.Timestamp})
		if err != nil {
			body = body[:n]
			e.deadLetter(it.m, it.md, s, topic, err.Error(), false)
			settle(it, false)
			continue
		}
		if it.md.NumDelivered > 1 {
			tm.redeliveries.Inc()
		}
		attempt = max(attempt, it.md.NumDelivered)
		valid = append(valid, it)
	}
	body = append(body, ']')
	w.body = body
	if len(valid) == 0 {
		return
	}

	hdr := append(w.hdr[:0], "Content-Type: "+ce.BatchContentType+"\r\nHottopic-Topic: "...)
	hdr = append(hdr, topic...)
	hdr = append(hdr, "\r\nHottopic-Delivery: "...)
	hdr = strconv.AppendUint(hdr, attempt, 10)
	hdr = append(hdr, "\r\n"...)
	w.hdr = hdr

	start := time.Now()
	tm.inFlight.Add(float64(len(valid)))
	out := e.postBatch(w, s, body, hdr, start.Add(s.timeout))
	tm.inFlight.Sub(float64(len(valid)))
	tm.latency.Observe(time.Since(start).Seconds())
	if out.err != nil && out.timedOut {
		out.err = fmt.Errorf("timeout after %s", s.timeout)
	}

	all := func(f func(it batchItem)) {
		for _, it := range valid {
			f(it)
		}
	}
	switch {
	case out.err != nil && e.releasing.Load() && !out.timedOut:
		all(func(it batchItem) { // shutdown cut it short: another instance takes them now
			_ = it.m.Nak()
			tm.released.Inc()
			settle(it, false)
		})
	case out.err == nil && out.status >= 200 && out.status < 300:
		failed, err := ce.BatchFailures(out.resp.Body)
		if err != nil {
			reason := statusText(out.status) + " but " + err.Error()
			all(func(it batchItem) { e.retry(it.m, it.md, s, topic, reason, 0); settle(it, false) })
			return
		}
		named := make(map[string]bool, len(failed)) // id → names an event of this batch
		for _, id := range failed {
			named[id] = false
		}
		for _, it := range valid {
			if _, ok := named[it.id]; ok {
				named[it.id] = true
			}
		}
		var unknown []string
		for id, known := range named {
			if !known {
				unknown = append(unknown, id)
			}
		}
		if len(unknown) > 0 && e.unknownIDSaid.CompareAndSwap(false, true) {
			e.log.Warn("the app's batchItemFailures name events that are not in the batch; ignored (said once)", "topic", topic, "item_identifiers", strings.Join(unknown, ","))
		}
		for _, it := range valid {
			if _, ok := named[it.id]; ok {
				e.retry(it.m, it.md, s, topic, statusText(out.status)+": named in batchItemFailures", 0)
				settle(it, false)
				continue
			}
			_ = p.AckDone(it.m)
			tm.succeeded.Inc()
		}
	case out.err != nil:
		all(func(it batchItem) { e.retry(it.m, it.md, s, topic, out.err.Error(), 0); settle(it, false) })
	case out.status == http.StatusRequestTimeout || out.status == http.StatusTooManyRequests || out.status >= 500 || out.status < 400:
		all(func(it batchItem) {
			e.retry(it.m, it.md, s, topic, out.failure(), out.retryAfter)
			settle(it, false)
		})
	default: // any other 4xx: the app says this batch can never succeed
		all(func(it batchItem) {
			e.deadLetter(it.m, it.md, s, topic, out.failure(), false)
			settle(it, false)
		})
	}
}

// postBatch POSTs a batch's body; the answer's body is read (up to
// batchBodyLimit) for its batchItemFailures.
func (e *engine) postBatch(w *worker, s *settings, body, hdr []byte, deadline time.Time) outcome {
	if s.pathErr != nil {
		return outcome{err: s.pathErr}
	}
	resp, err := w.conn.Post(deadline, s.path, hdr, body, batchBodyLimit)
	return answered(resp, err, func() error {
		return fmt.Errorf("the answer to a batch is larger than %d bytes", batchBodyLimit)
	})
}
