package scaler

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// hinter keeps a one-shot subscription on each watched topic: the first
// message published after it is armed marks the topic's stream for a look
// and wakes the poll loop. All subscriptions share one channel and one
// goroutine-free delivery path, so 10 000 topics cost no goroutines.
type hinter struct {
	nc    *nats.Conn
	ch    chan *nats.Msg
	poke  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	armed map[string]*nats.Subscription // stream → subscription
	topic map[string]string             // topic → stream
	fired map[string]bool
}

func newHinter(nc *nats.Conn) *hinter {
	h := &hinter{
		nc: nc, ch: make(chan *nats.Msg, 4096), poke: make(chan struct{}, 1), done: make(chan struct{}),
		armed: map[string]*nats.Subscription{}, topic: map[string]string{}, fired: map[string]bool{},
	}
	go h.run()
	return h
}

func (h *hinter) run() {
	for {
		var m *nats.Msg
		select {
		case <-h.done:
			return
		case m = <-h.ch:
		}
		h.mu.Lock()
		if stream, ok := h.topic[m.Subject]; ok {
			h.fired[stream] = true
			delete(h.armed, stream)
		}
		h.mu.Unlock()
		select {
		case h.poke <- struct{}{}:
		default:
		}
	}
}

// arm subscribes (once) to every watched topic that has no live subscription
// and drops the subscriptions of topics no longer watched. A subscription that
// ended without its message being seen (a full channel) counts as fired.
func (h *hinter) arm(watch map[string]string) {
	h.mu.Lock()
	n := 0
	for stream, t := range watch {
		if sub, ok := h.armed[stream]; ok {
			if sub.IsValid() {
				continue
			}
			h.fired[stream] = true
		}
		sub, err := h.nc.ChanSubscribe(t, h.ch)
		if err != nil {
			continue // the stream list still covers this topic
		}
		_ = sub.AutoUnsubscribe(1)
		h.armed[stream], h.topic[t] = sub, stream
		n++
	}
	for stream, sub := range h.armed {
		if _, ok := watch[stream]; !ok {
			_ = sub.Unsubscribe()
			delete(h.armed, stream)
		}
	}
	for t, stream := range h.topic {
		if _, ok := watch[stream]; !ok {
			delete(h.topic, t)
		}
	}
	h.mu.Unlock()
	if n > 0 {
		// The server must know the subscriptions before the looks that follow.
		_ = h.nc.FlushTimeout(2 * time.Second)
	}
}

// stop drops every subscription and ends the delivery goroutine.
func (h *hinter) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for stream, sub := range h.armed {
		_ = sub.Unsubscribe()
		delete(h.armed, stream)
	}
	select {
	case <-h.done:
	default:
		close(h.done)
	}
}

// take returns and forgets the streams hinted since the last call.
func (h *hinter) take() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.fired
	h.fired = map[string]bool{}
	return f
}
