package scaler

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lagReader reads consumer lag at a cost that does not grow with idle
// mappings. Three things tell it where to look:
//
//   - a one-shot core NATS subscription on every watched topic (at most one
//     message per topic and cycle reaches the scaler): the first event on an
//     idle topic is noticed at once, without any polling;
//   - the stream list, read in pages of 256 and spread over sweepCycles
//     cycles (all of it on the first cycle and after a reconnect), as the
//     safety net for anything a subscription could not see;
//   - the consumer list of each stream that was hinted, changed, still had
//     lag, or was never seen — one request per active stream.
//
// An empty stream needs no consumer list at all: topic streams keep a message
// while any consumer has it pending or in flight (interest retention), so no
// messages means no lag for anyone.
type lagReader struct {
	api         *jsAPI
	hints       *hinter
	seen        map[string]*streamLook
	sweepCycles int
	interval    time.Duration // the poll interval: busy streams are read once per interval
	nextOffset  int           // where the next partial sweep starts
	full        bool          // the next sweep lists every stream
	reconnects  uint64
	reads       int // consumer lists read in the last cycle
	listed      int // streams listed in the last cycle
}

type streamLook struct {
	state     streamState
	consumers map[string]consumerCounts // by consumer name; nil when the stream was empty
	pending   bool                      // some consumer had lag: look again next cycle
	read      bool                      // consumers read for this state (or the stream was empty)
	missing   bool                      // the stream does not exist
	err       error
	readAt    time.Time // when its consumers were last listed
}

// consumerCounts is what one consumer list entry says about a consumer.
type consumerCounts struct {
	lag      int64 // pending + ack pending
	inFlight int64 // ack pending: delivered, not yet acknowledged
	arrived  int64 // stream sequence delivered up to + pending: the events ever published, as seen by the consumer
}

func newLagReader(api *jsAPI, interval time.Duration) *lagReader {
	return &lagReader{api: api, hints: newHinter(api.nc), seen: map[string]*streamLook{}, sweepCycles: 10, interval: interval, full: true}
}

// lags is one cycle's view of the streams it was asked about.
type lags struct {
	streams map[string]*streamLook
}

// consumerLag is the lag of consumer name on stream, and whether it is known
// (the stream and the consumer exist and were read); missing says that the
// stream or the consumer does not exist.
func (l lags) consumerLag(stream, name string) (lag int64, known, missing bool) {
	st, ok := l.streams[stream]
	switch {
	case !ok:
		return 0, false, false
	case st.missing:
		return 0, false, true
	case st.err != nil || !st.read:
		return 0, false, false
	case st.consumers == nil:
		return 0, true, false
	}
	c, ok := st.consumers[name]
	if !ok {
		return 0, false, true
	}
	return c.lag, true, false
}

// consumerFlow is, for a consumer whose lag is known, how many of its lagged
// events are in flight and how many events ever arrived (for an empty
// stream, its last sequence: every event arrived was completed).
func (l lags) consumerFlow(stream, name string) (inFlight, arrived int64) {
	st := l.streams[stream]
	if st == nil {
		return 0, 0
	}
	if st.consumers == nil {
		return 0, int64(st.state.LastSeq)
	}
	c := st.consumers[name]
	return c.inFlight, c.arrived
}

// read looks at the streams in watch (stream name → topic). sweep adds this
// cycle's share of the stream list. An error means nothing is known.
func (r *lagReader) read(ctx context.Context, watch map[string]string, sweep bool) (lags, error) {
	r.reads, r.listed = 0, 0
	if !r.api.nc.IsConnected() {
		r.full = true
		return lags{}, errNATSDown
	}
	if rc := r.api.nc.Stats().Reconnects; rc != r.reconnects {
		r.reconnects, r.full = rc, true // subscriptions were blind meanwhile
	}
	r.hints.arm(watch)
	fired := r.hints.take()
	for name := range r.seen {
		if _, ok := watch[name]; !ok {
			delete(r.seen, name)
		}
	}
	toRead := map[string]bool{}
	if sweep || r.full {
		if err := r.sweep(ctx, watch, toRead); err != nil {
			r.full = true
			return lags{}, err
		}
	}
	now := time.Now()
	due := func(look *streamLook) bool { return now.Sub(look.readAt) >= r.interval*9/10 }
	for name := range watch {
		look := r.seen[name]
		switch {
		case look == nil || look.err != nil || !look.read:
			toRead[name] = true
		case fired[name] && !look.pending:
			toRead[name] = true // the first event on an idle topic: look at once
		case (fired[name] || look.pending) && due(look):
			toRead[name] = true // busy topics: once per poll interval
		case toRead[name] && look.pending && !due(look):
			delete(toRead, name)
		}
	}
	for name := range toRead {
		look := r.seen[name]
		if look == nil {
			look = &streamLook{}
			r.seen[name] = look
		}
		cons, err := r.consumers(ctx, name)
		r.reads++
		var ae *apiError
		switch {
		case errors.As(err, &ae) && ae.ErrCode == jetstream.JSErrCodeStreamNotFound:
			*look = streamLook{missing: true, read: true}
		case err != nil:
			if errors.Is(err, errNATSDown) || errors.Is(err, nats.ErrConnectionClosed) {
				r.full = true
				return lags{}, err
			}
			look.err, look.read = err, false
		default:
			look.consumers, look.err, look.read, look.missing, look.pending = cons, nil, true, false, false
			look.readAt = now
			for _, v := range cons {
				if v.lag > 0 {
					look.pending = true
					break
				}
			}
		}
	}
	out := lags{streams: make(map[string]*streamLook, len(watch))}
	for name := range watch {
		if look := r.seen[name]; look != nil {
			out.streams[name] = look
		}
	}
	return out, nil
}

// sweep reads this cycle's pages of the stream list (all of them when full),
// records each watched stream's state and marks those to read.
func (r *lagReader) sweep(ctx context.Context, watch map[string]string, toRead map[string]bool) error {
	full := r.full
	offset, pages, budget := 0, 0, 1<<30
	if !full {
		offset = r.nextOffset
	}
	present := map[string]bool{}
	for {
		var page streamListPage
		body := []byte(`{"offset":` + strconv.Itoa(offset) + `}`)
		if err := r.api.request(ctx, "STREAM.LIST", body, &page); err != nil {
			return err
		}
		pages++
		if !full && pages == 1 {
			// Spread the whole list over sweepCycles cycles.
			totalPages := (page.Total + 255) / 256
			budget = max(1, (totalPages+r.sweepCycles-1)/r.sweepCycles)
		}
		for _, s := range page.Streams {
			name := s.Config.Name
			r.listed++
			if _, ok := watch[name]; !ok {
				continue
			}
			present[name] = true
			look := r.seen[name]
			if look == nil {
				look = &streamLook{}
				r.seen[name] = look
			}
			switch {
			case s.State.Msgs == 0:
				*look = streamLook{state: s.State, read: true}
			case look.missing || !look.read || look.consumers == nil || look.state != s.State:
				look.state, look.missing = s.State, false
				toRead[name] = true
			}
		}
		offset += len(page.Streams)
		if len(page.Streams) == 0 || offset >= page.Total {
			offset = 0
			if !full {
				break
			}
			r.nextOffset, r.full = 0, false
			// A full sweep also knows which streams do not exist.
			for name := range watch {
				if !present[name] {
					r.seen[name] = &streamLook{missing: true, read: true}
				}
			}
			return nil
		}
		if !full && pages >= budget {
			break
		}
	}
	r.nextOffset = offset
	return nil
}

// consumers lists a stream's consumers (all pages) with each one's lag, in
// flight and arrived counts (all from the same list entries).
func (r *lagReader) consumers(ctx context.Context, stream string) (map[string]consumerCounts, error) {
	out := map[string]consumerCounts{}
	offset := 0
	for {
		var page consumerListPage
		body := []byte(`{"offset":` + strconv.Itoa(offset) + `}`)
		if err := r.api.request(ctx, "CONSUMER.LIST."+stream, body, &page); err != nil {
			return nil, err
		}
		for _, c := range page.Consumers {
			out[c.Name] = consumerCounts{
				lag:      int64(c.NumPending) + c.NumAckPending,
				inFlight: c.NumAckPending,
				arrived:  int64(c.Delivered.StreamSeq + c.NumPending),
			}
		}
		offset += len(page.Consumers)
		if len(page.Consumers) == 0 || offset >= page.Total {
			return out, nil
		}
	}
}
