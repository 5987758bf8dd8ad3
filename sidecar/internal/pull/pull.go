// Package pull keeps an exact, small window of a durable JetStream pull
// consumer's messages in hand. Unlike a continuous Consume, whose client-side
// buffer the caller cannot see, every message received here is handed out at
// once and stays visible until Done: so the sidecar can keep the ack deadline
// of buffered messages extended too (a slow app causes no duplicate), and it
// never holds more than Window messages (newly scaled instances are not
// starved by one instance's prefetch).
//
// Flow control is by credit: Window - held - requested. A pull request for the
// free credit is sent whenever it reaches Threshold. Requests carry an idle
// heartbeat, so a lost request (server restart, reconnect) is noticed by Tick.
package pull

import (
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Config describes one consumer to pull from.
type Config struct {
	Topic      string // carried for the caller; not used for pulling
	MaxDeliver int    // the consumer's MaxDeliver, carried for the caller
	Stream     string
	Consumer   string
	Window     int           // messages held at most (in flight + buffered)
	AckWait    time.Duration // the consumer's ack wait; held messages are extended at half of it
	Heartbeat  time.Duration // idle heartbeat asked of the server (default 2s)
	Expires    time.Duration // pull request lifetime (default 30s)
	APIPrefix  string        // default "$JS.API"
}

// Msg is a held message. Call Puller.Done once it is acked, nak'd or
// terminated; it must not be used afterwards.
type Msg struct {
	*nats.Msg
	p        *Puller
	slot     int
	extendAt int64 // unix nanos of the next InProgress; guarded by p.mu
}

// Puller owns one subscription and its pull requests.
type Puller struct {
	cfg     Config
	nc      *nats.Conn
	out     chan<- *Msg
	reqSubj string
	inbox   string
	sub     *nats.Subscription

	mu          sync.Mutex
	window      int
	held        int
	outstanding int   // requested, not yet received
	lastSeen    int64 // unix nanos of the last message or status
	slots       []*Msg
	free        []int
	stopped     bool
	reqBuf      []byte      // scratch for request bodies
	acks        []string    // reply subjects of acks not sent yet
	ackTimer    *time.Timer // sends acks at the latest AckDelay after the first
	// OnStatus, if set, hears about unexpected status messages (consumer
	// deleted, ...). Called with p.mu not held.
	onStatus func(code, description string)
}

// Start subscribes and sends the first pull request. Received messages are
// sent to out; when out is full, receipt blocks (and so does pulling).
func Start(nc *nats.Conn, cfg Config, out chan<- *Msg, onStatus func(code, description string)) (*Puller, error) {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 2 * time.Second
	}
	if cfg.Expires <= 0 {
		cfg.Expires = 30 * time.Second
	}
	if cfg.Expires < 2*cfg.Heartbeat {
		cfg.Expires = 2 * cfg.Heartbeat
	}
	if cfg.APIPrefix == "" {
		cfg.APIPrefix = "$JS.API"
	}
	if cfg.Window < 1 {
		cfg.Window = 1
	}
	p := &Puller{
		cfg: cfg, nc: nc, out: out, onStatus: onStatus,
		reqSubj: cfg.APIPrefix + ".CONSUMER.MSG.NEXT." + cfg.Stream + "." + cfg.Consumer,
		// Not NewRespInbox: under the request mux's wildcard every pulled
		// message would reach the client twice, and the mux hands a
		// message it cannot match (JetStream keeps the event's own subject)
		// to the one request in flight as its reply.
		inbox:    nc.NewInbox(),
		window:   cfg.Window,
		lastSeen: time.Now().UnixNano(),
	}
	sub, err := nc.Subscribe(p.inbox, p.receive)
	if err != nil {
		return nil, err
	}
	p.sub = sub
	p.mu.Lock()
	p.pullLocked()
	p.mu.Unlock()
	return p, nil
}

// Topic is Config.Topic.
func (p *Puller) Topic() string { return p.cfg.Topic }

// Config is the configuration the puller runs with.
func (p *Puller) Config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// Puller returns the puller that holds m.
func (m *Msg) Puller() *Puller { return m.p }

func (p *Puller) receive(m *nats.Msg) {
	if len(m.Data) == 0 && m.Header != nil && m.Header.Get("Status") != "" {
		p.status(m)
		return
	}
	now := time.Now().UnixNano()
	p.mu.Lock()
	p.lastSeen = now
	// One that arrives after Stop (asked for before it) is handed out too:
	// it has a place in the window, so a worker is free to take it. A nak
	// would count as a delivery the app never saw.
	if p.outstanding > 0 {
		p.outstanding--
	}
	var slot int
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		// More than requested (a request from before a reset): hold it anyway.
		slot = len(p.slots)
		p.slots = append(p.slots, &Msg{p: p, slot: slot})
	}
	h := p.slots[slot]
	h.Msg = m
	h.extendAt = now + int64(p.cfg.AckWait/2)
	p.held++
	p.mu.Unlock()
	p.out <- h
}

func (p *Puller) status(m *nats.Msg) {
	code, desc := m.Header.Get("Status"), m.Header.Get("Description")
	p.mu.Lock()
	p.lastSeen = time.Now().UnixNano()
	report := false
	switch code {
	case "100": // idle heartbeat or flow control
	case "404", "408":
		if n, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages")); err == nil {
			p.outstanding = max(0, p.outstanding-n)
		} else {
			p.outstanding = 0
		}
		p.pullLocked()
	default:
		// 409 (consumer deleted, leadership change, max waiting...) and
		// others: requests may be gone. Tick pulls again; no tight loop.
		if n, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages")); err == nil {
			p.outstanding = max(0, p.outstanding-n)
		} else {
			p.outstanding = 0
		}
		report = true
	}
	p.mu.Unlock()
	if report && p.onStatus != nil {
		p.onStatus(code, desc)
	}
}

// Done releases m's place in the window.
func (p *Puller) Done(m *Msg) {
	p.mu.Lock()
	m.Msg = nil
	p.free = append(p.free, m.slot)
	p.held--
	p.pullLocked()
	p.mu.Unlock()
}

var (
	ackAck  = []byte("+ACK")
	ackNext = []byte("+NXT ")
)

// AckDelay bounds how long AckDone may hold a plain ack back to send it
// together with others.
const AckDelay = time.Millisecond

// AckDone acks m and releases its place in the window. When that place is
// due to be asked for again, the ack carries the pull request itself (+NXT
// with the same batch, expiry and heartbeat), so the server gets one message
// per event instead of two. Otherwise the ack waits, at most AckDelay, to go
// out with the next ones in one write: at high concurrency that spares the
// server (and the sidecar) a wake-up per event. After Stop nothing waits.
// Like a plain ack it is not confirmed: JetStream redelivers an event whose
// ack was lost, so at worst a crash repeats the last millisecond's events.
func (p *Puller) AckDone(m *Msg) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	reply := m.Reply
	m.Msg = nil
	p.free = append(p.free, m.slot)
	p.held--
	if credit := p.creditLocked(); credit > 0 {
		p.flushAcksLocked()
		p.reqBuf = p.appendRequest(append(p.reqBuf[:0], ackNext...), credit)
		err := p.nc.PublishRequest(reply, p.inbox, p.reqBuf)
		if err == nil {
			p.outstanding += credit
		}
		return err
	}
	if p.stopped {
		return p.nc.Publish(reply, ackAck)
	}
	p.acks = append(p.acks, reply)
	if len(p.acks) == 1 {
		if p.ackTimer == nil {
			p.ackTimer = time.AfterFunc(AckDelay, p.flushAcks)
		} else {
			p.ackTimer.Reset(AckDelay)
		}
	}
	return nil
}

func (p *Puller) flushAcks() {
	p.mu.Lock()
	p.flushAcksLocked()
	p.mu.Unlock()
}

// flushAcksLocked sends the acks held back; a failed one is redelivered.
func (p *Puller) flushAcksLocked() {
	for i, reply := range p.acks {
		_ = p.nc.Publish(reply, ackAck)
		p.acks[i] = ""
	}
	p.acks = p.acks[:0]
}

// SetWindow changes how many messages may be held (concurrency changed).
func (p *Puller) SetWindow(n int) {
	p.mu.Lock()
	p.window = max(1, n)
	p.pullLocked()
	p.mu.Unlock()
}

// SetAckWait changes how often held messages are extended.
func (p *Puller) SetAckWait(d time.Duration) {
	p.mu.Lock()
	p.cfg.AckWait = d
	p.mu.Unlock()
}

// Held is the number of messages handed out and not yet Done.
func (p *Puller) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Stop ends pulling. Messages still arriving (asked for before) are handed
// out as usual; requests still waiting at the server end with the
// subscription, and JetStream does not count a delivery to a subject nobody
// listens on.
func (p *Puller) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.flushAcksLocked()
	p.mu.Unlock()
	if err := p.sub.Drain(); err != nil {
		_ = p.sub.Unsubscribe()
	}
}

// Drained reports whether, after Stop, the subscription is gone and every
// message that reached it was handed out or nak'd.
func (p *Puller) Drained() bool { return !p.sub.IsValid() }

// Reset forgets outstanding requests and pulls anew (after a reconnect the
// server may have lost them).
func (p *Puller) Reset() {
	p.mu.Lock()
	p.outstanding = 0
	p.lastSeen = time.Now().UnixNano()
	p.pullLocked()
	p.mu.Unlock()
}

// Tick keeps held messages alive (InProgress at half the ack wait) and
// re-pulls when the server has gone quiet for longer than three heartbeats.
// Call it regularly, at least every AckWait/4.
func (p *Puller) Tick(now time.Time) {
	n := now.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	if p.held > 0 {
		for _, h := range p.slots {
			if h.Msg != nil && h.extendAt <= n {
				_ = h.Msg.InProgress()
				h.extendAt = n + int64(p.cfg.AckWait/2)
			}
		}
	}
	if n-p.lastSeen > int64(3*p.cfg.Heartbeat) {
		p.outstanding = 0
		p.lastSeen = n
	}
	p.pullLocked()
}

// creditLocked is how many messages to ask for now, 0 for none yet.
func (p *Puller) creditLocked() int {
	if p.stopped {
		return 0
	}
	credit := p.window - p.held - p.outstanding
	if credit <= 0 || credit < p.threshold() && (p.outstanding > 0 || p.held > 0) {
		return 0
	}
	return credit
}

// appendRequest appends the JSON pull request for credit messages.
func (p *Puller) appendRequest(b []byte, credit int) []byte {
	b = append(b, `{"batch":`...)
	b = strconv.AppendInt(b, int64(credit), 10)
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, int64(p.cfg.Expires), 10)
	b = append(b, `,"idle_heartbeat":`...)
	b = strconv.AppendInt(b, int64(p.cfg.Heartbeat), 10)
	return append(b, '}')
}

func (p *Puller) pullLocked() {
	credit := p.creditLocked()
	if credit == 0 {
		return
	}
	p.reqBuf = p.appendRequest(p.reqBuf[:0], credit)
	if err := p.nc.PublishRequest(p.reqSubj, p.inbox, p.reqBuf); err != nil {
		return // not connected; Reset or Tick will pull again
	}
	p.outstanding += credit
}

// threshold is the fewest places asked for at once while events are still
// in hand or on their way: one, or an eighth of windows of 16 and more, so
// that a request (riding on an ack) brings events in pairs or more and the
// server, the sidecar's NATS reader and its flusher wake less often per
// event, while at most an eighth of the places wait empty.
func (p *Puller) threshold() int { return max(1, p.window/8) }

// MaxDeliver is Config.MaxDeliver.
func (p *Puller) MaxDeliver() int { return p.cfg.MaxDeliver }
