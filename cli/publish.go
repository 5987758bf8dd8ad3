package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/ce"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

func newPublishCommand() *cobra.Command {
	var (
		natsURL string
		service string
		dataDir string
		headers []string
		count   int
	)
	cmd := &cobra.Command{
		Use:   "publish TOPIC [DATA | -]",
		Short: "Publish an event to a topic (DATA, or - to read it from stdin)",
		Long: `Publish an event to a topic with a JetStream publish, waiting until it is stored.
The server is --nats if given, else HOTTOPIC_NATS_URL or a bound service in
VCAP_SERVICES, else the running ` + "`hottopic dev`" + ` (recorded in --data-dir), else ` + state.DefaultNATSURL + `.
The running ` + "`hottopic dev`" + ` has an event bus per service its manifest's apps list:
--service NAME publishes to that one (default: the bus of the apps that list none).`,
		Example: `  hottopic publish words "the quick brown fox"
  hottopic publish images.uploaded - < photo.png --header Content-Type=image/png
  hottopic publish words "load test" --count 500
  hottopic publish orders.created '{"id": 1}' --service orders-bus`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := args[0]
			if err := topic.Validate(t); err != nil {
				return err
			}
			if count < 1 {
				return fmt.Errorf("--count must be 1 or more, got %d", count)
			}
			hdr, err := parseHeaders(headers)
			if err != nil {
				return err
			}
			var data []byte
			if len(args) == 2 {
				data = []byte(args[1])
				if args[1] == "-" {
					if data, err = io.ReadAll(cmd.InOrStdin()); err != nil {
						return fmt.Errorf("reading the event from stdin: %v", err)
					}
				}
			}
			// Refused here, with the reason, rather than dead-lettered later.
			if err := ce.Ingest(hdr, data, false); err != nil {
				return err
			}
			cfg, hint, bus, err := publishTarget(natsURL, service, dataDir, os.Getenv)
			if err != nil {
				return err
			}
			if bus != nil && !slices.Contains(bus.Topics, t) {
				return fmt.Errorf("service %s takes the topics and output topics of its apps (%s), not %s: map one of its apps to %s in the manifest", bus.Service, orNone(bus.Topics), t, t)
			}
			// Bounds the retries against a refused connection, not a slow dial.
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
			nc, err := cfenv.Connect(ctx, cfg, "hottopic-publish")
			cancel()
			if err != nil {
				return fmt.Errorf("%v%s", err, hint)
			}
			defer nc.Close()
			n, seq, err := publish(cmd.Context(), nc, t, data, hdr, count)
			if err != nil {
				return err
			}
			if n == 1 {
				fmt.Fprintf(cmd.OutOrStdout(), "published 1 event to %s (stream %s, sequence %d)\n", t, topic.StreamName(t), seq)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "published %d events to %s (stream %s, last sequence %d)\n", n, t, topic.StreamName(t), seq)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "", "the running hottopic dev's event bus to publish to, by service name (default: the bus of the apps that list no services)")
	f.StringVar(&natsURL, "nats", "", "NATS server URL (default: HOTTOPIC_NATS_URL, VCAP_SERVICES, the running hottopic dev, "+state.DefaultNATSURL+")")
	f.StringArrayVar(&headers, "header", nil, "event header K=V (repeatable), e.g. Content-Type=application/json or ce-type=order.created")
	f.IntVarP(&count, "count", "n", 1, "publish the event this many times (load)")
	f.StringVar(&dataDir, "data-dir", state.DefaultDir, "data directory of the running hottopic dev")
	return cmd
}

// publishTarget picks the server: the flag, then the environment the CF
// way, then the running dev runtime, then the dev runtime's default address.
// A service names one of the running dev runtime's buses (and skips the
// environment); bus is the one picked, nil without a broker. hint is
// appended to a connection error.
func publishTarget(flagURL, service, dataDir string, getenv func(string) string) (cfg cfenv.NATS, hint string, bus *state.Bus, err error) {
	if flagURL != "" {
		if service != "" {
			return cfg, "", nil, errors.New("--service picks an event bus of the running hottopic dev; it cannot be combined with --nats")
		}
		cfg, err = cfenv.NATSFromURL(flagURL)
		if err != nil {
			return cfg, "", nil, fmt.Errorf("--nats: %v", err)
		}
		return cfg, "", nil, nil
	}
	if service == "" && (getenv(cfenv.EnvNATSURL) != "" || getenv("VCAP_SERVICES") != "") {
		cfg, err = cfenv.NATSFromEnv(getenv)
		if !errors.Is(err, cfenv.ErrNoNATS) {
			return cfg, "", nil, err
		}
	}
	const notRunning = " (is `hottopic dev` running? start it, or point --nats at a server)"
	st, err := state.Read(dataDir)
	switch {
	case err == nil && len(st.Buses) > 0:
		b, ok := st.Bus(service)
		switch {
		case !ok && service == "":
			return cfg, "", nil, fmt.Errorf("every app of the running hottopic dev lists services, so there is no default event bus: pick one with --service (%s)", strings.Join(st.Services(), ", "))
		case !ok:
			return cfg, "", nil, fmt.Errorf("no service %q in the running hottopic dev; its services: %s", service, strings.Join(st.Services(), ", "))
		}
		cfg, err = cfenv.NATSFromService(b.Key)
		cfg.Source = fmt.Sprintf("service %q of the running hottopic dev", b.Service)
		return cfg, notRunning, &b, err
	case err == nil && service != "":
		return cfg, "", nil, errors.New("the running hottopic dev serves one event bus without a broker (it was started with --nats or --cluster): publish without --service")
	case err == nil:
		cfg, err = cfenv.NATSFromURL(st.NATSURL)
		cfg.Source = "the running hottopic dev"
		return cfg, notRunning, nil, err
	case errors.Is(err, state.ErrNotRunning) && service != "":
		return cfg, "", nil, fmt.Errorf("--service picks an event bus of the running hottopic dev, and none runs from %s", dataDir)
	case errors.Is(err, state.ErrNotRunning):
		cfg, err = cfenv.NATSFromURL(state.DefaultNATSURL)
		cfg.Source = "default"
		return cfg, notRunning, nil, err
	default:
		return cfg, "", nil, err
	}
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

func parseHeaders(kvs []string) (nats.Header, error) {
	h := nats.Header{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t\r\n:") {
			return nil, fmt.Errorf("--header %q: want NAME=VALUE", kv)
		}
		h.Add(k, v)
	}
	return h, nil
}

// publishWindow is how many acknowledgements --count N keeps pending: the
// next event waits for the oldest acknowledgement once it is full, so the
// client never stalls with too many pending, however slow the server is.
const publishWindow = 256

// publishAckWait bounds the wait for each acknowledgement of --count N
// before that event is published again (publishAgain).
const publishAckWait = 5 * time.Second

// publishRetryFor bounds how long one event is published again after a
// failure that a cluster recovers from (a stream leader being elected, a
// node restarting): no answer, or no responder while a stream stores the
// topic. Every event carries a Nats-Msg-Id, so a retry of an event that was
// stored after all is dropped by the stream's de-duplication.
const publishRetryFor = 30 * time.Second

// publish stores count copies of the event, with at most publishWindow
// acknowledgements pending at once. A Nats-Msg-Id given for several copies
// gets "-<n>" appended, so that de-duplication does not fold them into one;
// without one, each copy gets a new unique id.
func publish(ctx context.Context, nc *nats.Conn, t string, data []byte, hdr nats.Header, count int) (int, uint64, error) {
	// An acknowledgement that never comes (the stream's replicas cannot
	// form, a node died holding it) ends the command with an error instead
	// of waiting forever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishWindow), jetstream.WithPublishAsyncTimeout(publishAckWait))
	if err != nil {
		return 0, 0, err
	}
	msgID := hdr.Get(jetstream.MsgIDHeader)
	if msgID == "" {
		msgID = nuid.Next()
	}
	mk := func(i int) *nats.Msg {
		m := &nats.Msg{Subject: t, Data: data, Header: nats.Header{}}
		for k, v := range hdr {
			m.Header[k] = append([]string(nil), v...)
		}
		if count > 1 {
			m.Header.Set(jetstream.MsgIDHeader, msgID+"-"+strconv.Itoa(i+1))
		} else {
			m.Header.Set(jetstream.MsgIDHeader, msgID)
		}
		return m
	}
	if count == 1 {
		ack, err := publishAgain(ctx, js, mk(0), nil)
		if err != nil {
			return 0, 0, err
		}
		return 1, ack.Sequence, nil
	}
	// A ring of the pending futures, oldest first. A future is off the
	// client's pending list before its result is delivered, so awaiting
	// the oldest always makes room for the next publish.
	var (
		ring   [publishWindow]jetstream.PubAckFuture
		head   int // index of the oldest pending future
		n      int // pending
		stored int
		last   uint64
	)
	failed := func(err error) error {
		return fmt.Errorf("%d of %d events stored, then: %v", stored, count, err)
	}
	await := func() error {
		f := ring[head]
		ring[head], head, n = nil, (head+1)%publishWindow, n-1
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case err := <-f.Err():
			if ack, err = publishAgain(ctx, js, f.Msg(), err); err != nil {
				return failed(err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		stored++
		last = max(last, ack.Sequence)
		return nil
	}
	for i := range count {
		if n == publishWindow {
			if err := await(); err != nil {
				return stored, last, err
			}
		}
		m := mk(i)
		f, err := js.PublishMsgAsync(m)
		if err != nil { // e.g. disconnected while the client reconnects
			ack, err := publishAgain(ctx, js, m, err)
			if err != nil {
				return stored, last, failed(err)
			}
			stored++
			last = max(last, ack.Sequence)
			continue
		}
		ring[(head+n)%publishWindow], n = f, n+1
	}
	for n > 0 {
		if err := await(); err != nil {
			return stored, last, err
		}
	}
	return count, last, nil
}

// publishAgain publishes m (again, after failure first, if not nil) until
// it is stored, for up to publishRetryFor while the failure is one a
// cluster recovers from.
func publishAgain(ctx context.Context, js jetstream.JetStream, m *nats.Msg, first error) (*jetstream.PubAck, error) {
	deadline := time.Now().Add(publishRetryFor)
	err := first
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var ack *jetstream.PubAck
			ack, err = js.PublishMsg(actx, m)
			cancel()
			if err == nil {
				return ack, nil
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) || !recoverable(ctx, js, m.Subject, err) {
			return nil, publishError(m.Subject, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		err = nil
	}
}

// recoverable: no answer came, the client is reconnecting, or no responder
// while a stream stores the topic (its leader is being elected); the server
// being briefly unable to serve JetStream counts too. Anything else is final.
func recoverable(ctx context.Context, js jetstream.JetStream, t string, err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting):
		return true
	case errors.As(err, &apiErr) && apiErr.Code == 503:
		return true
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, lerr := js.StreamNameBySubject(lctx, t)
		return !errors.Is(lerr, jetstream.ErrStreamNotFound)
	}
	return false
}

func publishError(t string, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no stream stores topic %s yet: map an app to it first (in `hottopic dev`, an app in the manifest with annotation hottopic.io/topics: %s)", t, t)
	}
	return fmt.Errorf("publish to %s: %v", t, provision.NATSError(err))
}
