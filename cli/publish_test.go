package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/cli"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestPublish(t *testing.T) {
	spec.Run(t, "publish", testPublish, spec.Report(report.Terminal{}))
}

func testPublish(t *testing.T, when spec.G, it spec.S) {
	var (
		srv *natstest.Server
		js  jetstream.JetStream
		ctx = context.Background()
	)

	it.Before(func() {
		RegisterTestingT(t)
		t.Setenv("HOTTOPIC_NATS_URL", "")
		t.Setenv("VCAP_SERVICES", "")
		srv = natstest.Run(t)
		var err error
		js, err = jetstream.New(srv.Connect())
		Expect(err).NotTo(HaveOccurred())
	})

	publishRun := func(stdin string, args ...string) result {
		root := cli.NewRoot()
		var out, errb bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetIn(strings.NewReader(stdin))
		root.SetArgs(append([]string{"publish"}, args...))
		r := result{}
		if err := root.Execute(); err != nil {
			errb.WriteString("Error: " + err.Error() + "\n")
			r.code = 1
		}
		r.stdout, r.stderr = out.String(), errb.String()
		return r
	}

	// mapped makes the topic's stream and a consumer that keeps its events.
	mapped := func(t string) jetstream.Consumer {
		_, err := provision.EnsureTopicStream(ctx, js, t, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		c, err := provision.EnsureConsumer(ctx, js, "app-1", "", t, mapping.Defaults())
		Expect(err).NotTo(HaveOccurred())
		return c
	}

	fetch := func(c jetstream.Consumer, n int) []jetstream.Msg {
		b, err := c.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
		Expect(err).NotTo(HaveOccurred())
		var out []jetstream.Msg
		for m := range b.Messages() {
			out = append(out, m)
		}
		return out
	}

	it("stores the event with its headers and says where", func() {
		c := mapped("orders.created")
		r := publishRun("", "orders.created", `{"id":1}`, "--nats", srv.URL(), "--header", "Content-Type=application/json", "--header", "ce-type=order.created")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("published 1 event to orders.created (stream HT_orders_created, sequence 1)\n"))
		msgs := fetch(c, 1)
		Expect(msgs).To(HaveLen(1))
		Expect(string(msgs[0].Data())).To(Equal(`{"id":1}`))
		Expect(msgs[0].Headers().Get("Content-Type")).To(Equal("application/json"))
		Expect(msgs[0].Headers().Get("ce-type")).To(Equal("order.created"))
	})

	it("reads the event from stdin with -, and publishes --count copies with distinct message ids", func() {
		c := mapped("images")
		r := publishRun("\x89PNG bytes", "images", "-", "--nats", srv.URL(), "--count", "5", "--header", "Nats-Msg-Id=upload")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("published 5 events to images (stream HT_images, last sequence 5)\n"))
		var ids []string
		for _, m := range fetch(c, 10) {
			Expect(string(m.Data())).To(Equal("\x89PNG bytes"))
			ids = append(ids, m.Headers().Get("Nats-Msg-Id"))
		}
		Expect(ids).To(Equal([]string{"upload-1", "upload-2", "upload-3", "upload-4", "upload-5"}))
	})

	it("publishes --count 100000 with a bounded window of pending acks: every event stored exactly once", func() {
		mapped("load")
		const n = 100000
		r := publishRun("", "load", "a hundred-byte event, more or less, as a load test would publish it, over and over", "--nats", srv.URL(), "--count", "100000")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("published 100000 events to load (stream HT_load, last sequence 100000)\n"))
		s, err := js.Stream(ctx, "HT_load")
		Expect(err).NotTo(HaveOccurred())
		st := s.CachedInfo().State
		// No Nats-Msg-Id: a copy published twice would be stored twice.
		Expect(st.Msgs).To(BeEquivalentTo(n), "events stored")
		Expect(st.FirstSeq).To(BeEquivalentTo(1))
		Expect(st.LastSeq).To(BeEquivalentTo(n))
	})

	it("finds the running dev runtime, else the environment wins", func() {
		c := mapped("words")
		dataDir := t.TempDir()
		Expect(state.Write(dataDir, state.State{PID: os.Getpid(), NATSURL: srv.URL()})).To(Succeed())
		r := publishRun("", "words", "hello", "--data-dir", dataDir)
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(fetch(c, 1)).To(HaveLen(1))

		// HOTTOPIC_NATS_URL wins over a recorded runtime (here unreachable).
		Expect(state.Write(dataDir, state.State{PID: os.Getpid(), NATSURL: "nats://" + closedAddr(t)})).To(Succeed())
		t.Setenv("HOTTOPIC_NATS_URL", srv.URL())
		r = publishRun("", "words", "hello", "--data-dir", dataDir)
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(fetch(c, 1)).To(HaveLen(1))
	})

	it("picks a bus of the running dev runtime with --service, and says plainly what it cannot pick", func() {
		c := mapped("words")
		dataDir := t.TempDir()
		key := func(name string) cfenv.Service {
			return cfenv.Service{Name: name, Label: "hottopic", Credentials: map[string]json.RawMessage{"uri": json.RawMessage(strconv.Quote(srv.URL()))}}
		}
		Expect(state.Write(dataDir, state.State{PID: os.Getpid(), NATSURL: srv.URL(), Buses: []state.Bus{
			{Service: "bus-a", Topics: []string{"words"}, Key: key("bus-a")},
			{Service: "bus-b", Topics: []string{"orders"}, Key: key("bus-b")},
		}})).To(Succeed())
		// --service wins over the environment (here unreachable).
		t.Setenv("HOTTOPIC_NATS_URL", "nats://"+closedAddr(t))
		r := publishRun("", "words", "hello", "--service", "bus-a", "--data-dir", dataDir)
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(fetch(c, 1)).To(HaveLen(1))
		t.Setenv("HOTTOPIC_NATS_URL", "")

		failsWith(t, publishRun("", "words", "x", "--service", "nosuch", "--data-dir", dataDir),
			`no service "nosuch" in the running hottopic dev; its services: bus-a, bus-b`)
		failsWith(t, publishRun("", "words", "x", "--service", "bus-b", "--data-dir", dataDir),
			"service bus-b takes the topics and output topics of its apps (orders), not words: map one of its apps to words in the manifest")
		failsWith(t, publishRun("", "words", "x", "--data-dir", dataDir),
			"every app of the running hottopic dev lists services, so there is no default event bus: pick one with --service (bus-a, bus-b)")
		failsWith(t, publishRun("", "words", "x", "--service", "bus-a", "--nats", srv.URL()),
			"--service picks an event bus of the running hottopic dev; it cannot be combined with --nats")
		failsWith(t, publishRun("", "words", "x", "--service", "bus-a", "--data-dir", t.TempDir()),
			"--service picks an event bus of the running hottopic dev, and none runs from ")
		Expect(state.Write(dataDir, state.State{PID: os.Getpid(), NATSURL: srv.URL()})).To(Succeed())
		failsWith(t, publishRun("", "words", "x", "--service", "bus-a", "--data-dir", dataDir),
			"the running hottopic dev serves one event bus without a broker (it was started with --nats or --cluster): publish without --service")
	})

	it("stores a binary CloudEvent in the NATS binding: values percent-encoded, Content-Type as ce-datacontenttype", func() {
		c := mapped("orders.created")
		r := publishRun("", "orders.created", `{"id":1}`, "--nats", srv.URL(), "--header", "Content-Type=application/json",
			"--header", "ce-specversion=1.0", "--header", "ce-id=order 1", "--header", "ce-source=/shop", "--header", "ce-type=order.created",
			"--header", "ce-time=2026-12-01T10:00:00Z", "--header", "ce-tenant=Acme €")
		Expect(r.code).To(Equal(0), r.stderr)
		h := fetch(c, 1)[0].Headers()
		Expect(h.Get("ce-datacontenttype")).To(Equal("application/json"))
		Expect(h.Get("Content-Type")).To(BeEmpty())
		Expect(h.Get("ce-id")).To(Equal("order%201"))
		Expect(h.Get("ce-tenant")).To(Equal("Acme%20%E2%82%AC"))
		Expect(h.Get("ce-time")).To(Equal("2026-12-01T10:00:00Z"))
	})

	it("refuses an invalid CloudEvent with one line naming the attribute, and stores nothing", func() {
		c := mapped("orders.created")
		failsWith(t, publishRun("", "orders.created", "x", "--nats", srv.URL(), "--header", "ce-time=yesterday"),
			`invalid CloudEvent: ce-time: "yesterday" is not an RFC 3339 timestamp`)
		failsWith(t, publishRun("", "orders.created", "x", "--nats", srv.URL(), "--header", "ce-specversion=1.0", "--header", "ce-id=1", "--header", "ce-type=t"),
			"invalid CloudEvent: a binary event (ce-specversion given) needs ce-id, ce-source and ce-type: ce-source is missing")
		failsWith(t, publishRun("", "orders.created", `{"specversion":"1.0","id":"1","source":"/s"}`, "--nats", srv.URL(), "--header", "Content-Type=application/cloudevents+json"),
			"invalid CloudEvent: type is missing")
		failsWith(t, publishRun("", "orders.created", "x", "--nats", srv.URL(), "--header", "ce-My_Ext=1"),
			`invalid CloudEvent: ce-my_ext: extension name "my_ext" may only have lower-case letters a-z and digits`)
		info, err := c.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.NumPending).To(BeZero())
	})

	it("fails with one line: bad topic, bad header, bad count, unmapped topic, no server", func() {
		failsWith(t, publishRun("", "orders.*", "x", "--nats", srv.URL()), `invalid topic "orders.*": wildcards`)
		failsWith(t, publishRun("", "t", "x", "--nats", srv.URL(), "--header", "novalue"), `--header "novalue": want NAME=VALUE`)
		failsWith(t, publishRun("", "t", "x", "--nats", srv.URL(), "--count", "0"), "--count must be 1 or more")
		failsWith(t, publishRun("", "unmapped", "x", "--nats", srv.URL()), "no stream stores topic unmapped yet: map an app to it first")
		failsWith(t, publishRun("", "t", "x", "--nats", closedAddr(t)), "cannot connect to NATS at nats://127.0.0.1:")

		// A runtime that recorded itself but is unreachable: say what to check.
		dataDir := t.TempDir()
		Expect(state.Write(dataDir, state.State{PID: os.Getpid(), NATSURL: "nats://" + closedAddr(t)})).To(Succeed())
		r := publishRun("", "t", "x", "--data-dir", dataDir)
		failsWith(t, r, "(from the running hottopic dev)")
		Expect(r.stderr).To(ContainSubstring("is `hottopic dev` running?"))
	})
}
