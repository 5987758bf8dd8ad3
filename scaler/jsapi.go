package scaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// apiError is the error object of a JetStream API response.
type apiError struct {
	Code        int                 `json:"code"`
	ErrCode     jetstream.ErrorCode `json:"err_code"`
	Description string              `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("jetstream API error %d (%d): %s", e.Code, e.ErrCode, e.Description)
}

var errNATSDown = errors.New("not connected to NATS")

// request sends one API request on $JS.API.<subject> and decodes the answer
// into out; an error object in the answer becomes an *apiError.
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
		Delivered     struct {
			StreamSeq uint64 `json:"stream_seq"`
		} `json:"delivered"`
	} `json:"consumers"`
}

func (p *consumerListPage) apiErr() *apiError { return p.Error }
