package scaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jsAPI sends raw JetStream API requests and counts them. The lag reader uses
// the list APIs directly so that it can decode only the few fields it needs
// from pages of hundreds of streams and consumers.
type jsAPI struct {
	nc       *nats.Conn
	prefix   string // "$JS.API." or a domain's prefix
	timeout  time.Duration
	requests atomic.Int64
}

func newJSAPI(js jetstream.JetStream) *jsAPI {
	o := js.Options()
	prefix := o.APIPrefix
	if o.Domain != "" {
		prefix = "$JS." + o.Domain + ".API."
	}
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if prefix[len(prefix)-1] != '.' {
		prefix += "."
	}
	return &jsAPI{nc: js.Conn(), prefix: prefix, timeout: 3 * time.Second}
}

type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("jetstream API error %d (%d): %s", e.Code, e.ErrCode, e.Description)
}

var errNATSDown = errors.New("not connected to NATS")

func (a *jsAPI) request(ctx context.Context, subject string, body []byte, out interface{ apiErr() *apiError }) error {
	if !a.nc.IsConnected() {
		return errNATSDown // a request would only wait for its timeout
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	a.requests.Add(1)
	msg, err := a.nc.RequestWithContext(ctx, a.prefix+subject, body)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("%s: undecodable response: %v", subject, err)
	}
	if e := out.apiErr(); e != nil {
		return fmt.Errorf("%s: %w", subject, e)
	}
	return nil
}

// streamState is what a stream list page says about one stream: enough to
// tell whether anything happened in it since the last look.
type streamState struct {
	Msgs      uint64 `json:"messages"`
	FirstSeq  uint64 `json:"first_seq"`
	LastSeq   uint64 `json:"last_seq"`
	Consumers int    `json:"consumer_count"`
}

type streamListPage struct {
	Error   *apiError `json:"error"`
	Total   int       `json:"total"`
	Streams []struct {
		Config struct {
			Name string `json:"name"`
		} `json:"config"`
		State streamState `json:"state"`
	} `json:"streams"`
}

func (p *streamListPage) apiErr() *apiError { return p.Error }

type consumerListPage struct {
	Error     *apiError `json:"error"`
	Total     int       `json:"total"`
	Consumers []struct {
		Name          string `json:"name"`
		NumPending    uint64 `json:"num_pending"`
		NumAckPending int64  `json:"num_ack_pending"`
	} `json:"consumers"`
}

func (p *consumerListPage) apiErr() *apiError { return p.Error }

// lagReader reads consumer lag at a cost that does not grow with idle
// mappings: one stream-list page per 256 streams, then a consumer list only
// for streams that changed since the last look or still had lag. An empty
// stream needs no consumer list at all: topic streams keep a message while any
// consumer has it pending or in flight (interest retention), so no messages
// means no lag for anyone.
type lagReader struct {
	api    *jsAPI
	seen   map[string]*streamLook
	reads  int // consumer lists read in the last cycle (for tests and metrics)
	listed int // streams listed in the last cycle
}

type streamLook struct {
	state     streamState
	consumers map[string]int64 // consumer name → pending + ack pending; nil when empty
	pending   bool             // some consumer had lag: look again next time
	read      bool             // consumers were read for this state
	err       error
}

func newLagReader(api *jsAPI) *lagReader {
	return &lagReader{api: api, seen: map[string]*streamLook{}}
}

// lags is one cycle's view of the streams it was asked about.
type lags struct {
	streams map[string]*streamLook // absent: the stream does not exist
}

// consumerLag is the lag of consumer name on stream, and whether it is known
// (the stream and the consumer exist and were read).
func (l lags) consumerLag(stream, name string) (lag int64, known, missing bool) {
	st, ok := l.streams[stream]
	if !ok {
		return 0, false, true
	}
	if st.err != nil {
		return 0, false, false
	}
	if st.state.Msgs == 0 {
		return 0, true, false
	}
	lag, ok = st.consumers[name]
	if !ok {
		return 0, false, true
	}
	return lag, true, false
}

// read looks at every stream in watch (by name). An error means nothing is
// known this cycle.
func (r *lagReader) read(ctx context.Context, watch map[string]bool) (lags, error) {
	out := lags{streams: make(map[string]*streamLook, len(watch))}
	r.reads, r.listed = 0, 0
	offset := 0
	for {
		var page streamListPage
		body := []byte(`{"offset":` + strconv.Itoa(offset) + `}`)
		if err := r.api.request(ctx, "STREAM.LIST", body, &page); err != nil {
			return lags{}, err
		}
		for _, s := range page.Streams {
			name := s.Config.Name
			r.listed++
			if !watch[name] {
				continue
			}
			look := r.seen[name]
			if look == nil {
				look = &streamLook{}
				r.seen[name] = look
			}
			if s.State.Msgs == 0 {
				*look = streamLook{state: s.State, read: true}
			} else if !look.read || look.pending || look.err != nil || look.state != s.State {
				look.state = s.State
				look.consumers, look.err = r.consumers(ctx, name)
				look.read = look.err == nil
				look.pending = false
				for _, v := range look.consumers {
					if v > 0 {
						look.pending = true
						break
					}
				}
				r.reads++
			}
			out.streams[name] = look
		}
		offset += len(page.Streams)
		if len(page.Streams) == 0 || offset >= page.Total {
			break
		}
	}
	for name := range r.seen {
		if !watch[name] {
			delete(r.seen, name)
		}
	}
	return out, nil
}

func (r *lagReader) consumers(ctx context.Context, stream string) (map[string]int64, error) {
	out := map[string]int64{}
	offset := 0
	for {
		var page consumerListPage
		body := []byte(`{"offset":` + strconv.Itoa(offset) + `}`)
		if err := r.api.request(ctx, "CONSUMER.LIST."+stream, body, &page); err != nil {
			return nil, err
		}
		for _, c := range page.Consumers {
			out[c.Name] = int64(c.NumPending) + c.NumAckPending
		}
		offset += len(page.Consumers)
		if len(page.Consumers) == 0 || offset >= page.Total {
			return out, nil
		}
	}
}
