package sidecar_test

// The sidecar between clients nobody on the project wrote: the CloudEvents Go
// SDK's JetStream sender and HTTP sender publishing (internal/ce/cesender),
// and as the function app the Go SDK's HTTP receiver (internal/ce/cereceiver)
// or the cloudevents npm package's (testdata/ce-receiver.js), each a real
// process.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	nats_jetstream "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestCloudEvents(t *testing.T) {
	spec.Run(t, "CloudEvents interop", testCloudEvents, spec.Report(report.Terminal{}))
}

// received parses the "EVENT <json>" lines a receiver printed.
func received(p *proctest.Proc) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(p.Output(), "\n") {
		if j, ok := strings.CutPrefix(l, "EVENT "); ok {
			var m map[string]any
			if json.Unmarshal([]byte(j), &m) == nil {
				out = append(out, m)
			}
		}
	}
	return out
}

// byID indexes received events by id.
func byID(evs []map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, e := range evs {
		id, _ := e["id"].(string)
		out[id] = e
	}
	return out
}

// orderEvent is an event with every attribute and extensions of three types.
func orderEvent(id string) event.Event {
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("https://shop.example/orders")
	e.SetType("com.example.order.created")
	e.SetSubject("order/" + id)
	e.SetTime(time.Date(2026, 11, 30, 8, 1, 2, 345000000, time.UTC))
	e.SetDataSchema("https://shop.example/schemas/order.json")
	e.SetExtension("tenant", "acme")
	e.SetExtension("priority", 3)
	e.SetExtension("urgent", true)
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]any{"order": id})
	return e
}

// expectEvent checks a received event (in the JSON format) against the sent one.
// Extensions are compared by their string form: the HTTP binary mode carries strings.
func expectEvent(g Gomega, got map[string]any, want event.Event) {
	g.Expect(got).NotTo(BeNil(), "event %s not received", want.ID())
	g.Expect(got["specversion"]).To(Equal("1.0"))
	g.Expect(got["id"]).To(Equal(want.ID()))
	g.Expect(got["source"]).To(Equal(want.Source()))
	g.Expect(got["type"]).To(Equal(want.Type()))
	g.Expect(got["subject"]).To(Equal(want.Subject()))
	tm, err := time.Parse(time.RFC3339Nano, got["time"].(string))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tm.Equal(want.Time())).To(BeTrue(), "time %v", got["time"])
	g.Expect(got["dataschema"]).To(Equal(want.DataSchema()))
	g.Expect(got["datacontenttype"]).To(Equal(want.DataContentType()))
	var data any
	g.Expect(json.Unmarshal(want.Data(), &data)).To(Succeed())
	g.Expect(got["data"]).To(Equal(data))
	for k, v := range want.Extensions() {
		s, _ := json.Marshal(v)
		g.Expect(got).To(HaveKey(k))
		gs, _ := json.Marshal(got[k])
		g.Expect(strings.Trim(string(gs), `"`)).To(Equal(strings.Trim(string(s), `"`)), "extension %s", k)
	}
}

// nodeModules installs the cloudevents npm package (cached) and returns NODE_PATH.
func nodeModules(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	out, err := exec.Command(filepath.Join(root, "scripts", "tools.sh"), "cloudevents-js").Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh cloudevents-js: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func testCloudEvents(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		srv        *natstest.Server
		nc         *nats.Conn
		js         jetstream.JetStream
		guid       = "6f1c2a4e-0000-4000-8000-0000000000ce"
		subject    = "orders.created"
		stream     = topic.StreamName(subject)
		ctx        = context.Background()
	)

	it.Before(func() {
		srv = natstest.Run(t)
		nc = srv.Connect()
		js = jsFor(t, nc)
	})

	goReceiver := func() (*proctest.Proc, int) {
		port := freePort(t)
		cmd := exec.Command(proctest.Build(t, "./internal/ce/cereceiver"))
		cmd.Env = []string{"PORT=" + strconv.Itoa(port), "PATH=" + os.Getenv("PATH")}
		p := proctest.Start(t, cmd)
		Eventually(p.Output, 20*time.Second).Should(ContainSubstring("listening on"))
		return p, port
	}
	nodeReceiver := func() (*proctest.Proc, int) {
		modules := nodeModules(t)
		port := freePort(t)
		cmd := exec.Command("node", "testdata/ce-receiver.js")
		cmd.Env = []string{"PORT=" + strconv.Itoa(port), "NODE_PATH=" + modules, "PATH=" + os.Getenv("PATH")}
		p := proctest.Start(t, cmd)
		Eventually(p.Output, 20*time.Second).Should(ContainSubstring("listening on"))
		return p, port
	}
	sidecar := func(appPort int, extra ...string) *proctest.Proc {
		p := startSidecar(t, env(guid, appPort, srv.URL(), append([]string{"HOTTOPIC_TOPICS", subject}, extra...)...))
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
		return p
	}
	// cesender runs the Go SDK's sender as a process: args, then the mode.
	cesender := func(e event.Event, structured bool, args ...string) {
		mode := "binary"
		if structured {
			mode = "structured"
		}
		cmd := exec.Command(proctest.Build(t, "./internal/ce/cesender"), append(args, mode)...)
		b, err := json.Marshal(e)
		Expect(err).NotTo(HaveOccurred())
		cmd.Stdin = bytes.NewReader(b)
		out, code := proctest.Run(t, cmd, 30*time.Second)
		Expect(code).To(Equal(0), out)
		Expect(out).To(Equal("ACK\n"))
	}
	// sdkSend publishes e with the Go SDK's JetStream sender.
	sdkSend := func(e event.Event, structured bool) {
		cesender(e, structured, "nats", srv.URL(), stream, subject)
	}
	dlqCount := func() uint64 {
		s, err := js.Stream(ctx, topic.DLQStream)
		Expect(err).NotTo(HaveOccurred())
		return s.CachedInfo().State.Msgs
	}
	acked := func() uint64 { return consumerInfo(t, js, stream, guid).AckFloor.Stream }

	it("the Go SDK on both ends: binary and structured events arrive as they were sent, and are acked", func() {
		recv, port := goReceiver()
		sidecar(port)
		bin, st := orderEvent("binary-1"), orderEvent("structured-1")
		sdkSend(bin, false)
		sdkSend(st, true)
		Eventually(func() int { return len(received(recv)) }, 15*time.Second).Should(Equal(2))
		got := byID(received(recv))
		expectEvent(NewWithT(t), got["binary-1"], bin)
		expectEvent(NewWithT(t), got["structured-1"], st)
		Expect(got["structured-1"]["priority"]).To(Equal(float64(3)), "a structured event keeps its extension types")
		Eventually(acked, 5*time.Second).Should(Equal(uint64(2)))
		Expect(dlqCount()).To(BeZero())
		Expect(recv.Output()).NotTo(ContainSubstring("MUST NOT be overwritten"))
	})

	it("percent-encodes ids, and dead-letters an invalid event at once with the reason", func() {
		recv, port := goReceiver()
		sidecar(port)
		pub := func(h nats.Header, data string) {
			_, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: []byte(data)})
			Expect(err).NotTo(HaveOccurred())
		}
		pub(nats.Header{"Nats-Msg-Id": {"order 1 50% €"}}, "plain")
		pub(nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"bad-time"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-time": {"yesterday"}}, "late")
		pub(nats.Header{"Content-Type": {"application/cloudevents+json"}}, `{"specversion":"1.0","id":"no-type","source":"/s"}`)
		pub(nil, "last")

		dlq := dlqMessages(t, js, 2)
		reasons := []string{dlq[0].Header.Get(provision.HeaderReason), dlq[1].Header.Get(provision.HeaderReason)}
		Expect(reasons).To(ConsistOf(
			`invalid CloudEvent: ce-time: "yesterday" is not an RFC 3339 timestamp`,
			"invalid CloudEvent: type is missing (a CloudEvent needs specversion, id, source and type)"))
		for _, d := range dlq {
			Expect(d.Header.Get(provision.HeaderDeliveries)).To(Equal("1"), "dead-lettered at the first attempt, not retried")
		}
		Eventually(func() int { return len(received(recv)) }, 15*time.Second).Should(Equal(2))
		got := byID(received(recv))
		Expect(got).To(HaveKey("order%201%2050%25%20%E2%82%AC"), "HTTP binding 3.1.3.2; the SDK does not decode")
		Expect(got).To(HaveKey(stream + "-4"))
		Eventually(acked, 5*time.Second).Should(Equal(uint64(4)))
	})

	it("/publish: the Go SDK's HTTP sender in, its receiver out; an invalid attribute refused with one line", func() {
		recv, port := goReceiver()
		lp := freePort(t)
		sidecar(port, "HOTTOPIC_LISTEN", "127.0.0.1:"+strconv.Itoa(lp))
		base := "http://127.0.0.1:" + strconv.Itoa(lp)
		Eventually(func() error { _, err := http.Get(base + "/healthz"); return err }, 10*time.Second).Should(Succeed())

		bin, st := orderEvent("http-binary"), orderEvent("http-structured")
		cesender(bin, false, "http", base+"/publish/"+subject)
		cesender(st, true, "http", base+"/publish/"+subject)

		post := func(h map[string]string) (int, string) {
			req, _ := http.NewRequest(http.MethodPost, base+"/publish/"+subject, strings.NewReader("x"))
			for k, v := range h {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		code, body := post(map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-time": "yesterday"})
		Expect(code).To(Equal(http.StatusBadRequest))
		Expect(body).To(Equal(`{"error":"invalid CloudEvent: ce-time: \"yesterday\" is not an RFC 3339 timestamp"}` + "\n"))
		code, body = post(map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-datacontenttype": "text/plain"})
		Expect(code).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring("ce-datacontenttype is not an HTTP header"))

		Eventually(func() int { return len(received(recv)) }, 15*time.Second).Should(Equal(2))
		got := byID(received(recv))
		expectEvent(NewWithT(t), got["http-binary"], bin)
		expectEvent(NewWithT(t), got["http-structured"], st)
		info, err := js.Stream(ctx, stream)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.CachedInfo().State.LastSeq).To(Equal(uint64(2)), "nothing refused was stored")
	})

	it("the cloudevents npm receiver accepts binary, structured and Hot Topic's own events", func() {
		recv, port := nodeReceiver()
		sidecar(port)
		bin, st := orderEvent("node-binary"), orderEvent("node-structured")
		sdkSend(bin, false)
		sdkSend(st, true)
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: nats.Header{"Nats-Msg-Id": {"a b€"}, "ce-type": {"com.example.plain"}}, Data: []byte("hello")})
		Expect(err).NotTo(HaveOccurred())

		Eventually(func() int { return len(received(recv)) }, 15*time.Second).Should(Equal(3))
		Expect(recv.Output()).NotTo(ContainSubstring("REJECTED"))
		got := byID(received(recv))
		expectEvent(NewWithT(t), got["node-binary"], bin)
		expectEvent(NewWithT(t), got["node-structured"], st)
		plain := got["a%20b%E2%82%AC"]
		Expect(plain).NotTo(BeNil(), "got %v", got)
		Expect(plain["type"]).To(Equal("com.example.plain"))
		Expect(plain["source"]).To(Equal("hottopic:" + subject))
		Expect(plain["subject"]).To(Equal(subject))
		Expect(plain["data"]).To(Equal("hello"))
		Eventually(acked, 5*time.Second).Should(Equal(uint64(3)))
		Expect(dlqCount()).To(BeZero())
	})

	it("stores the app's CloudEvent response in the NATS binding on the output topic, and refuses an invalid one", func() {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"orders.done"}})
		Expect(err).NotTo(HaveOccurred())
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			h := w.Header()
			h.Set("Ce-Specversion", "1.0")
			h.Set("Ce-Id", "done%20"+d.Body) // percent-encoded, as the HTTP binding has it
			h.Set("Ce-Source", "/fn")
			h.Set("Ce-Type", "com.example.order.done")
			h.Set("Content-Type", "application/json")
			if d.Body == "bad" {
				h.Set("Ce-Time", "yesterday")
			}
			_, _ = w.Write([]byte(`{"done":true}`))
		}).start(t)
		sidecar(app.port, "HOTTOPIC_OUTPUT_TOPIC", "orders.done", "HOTTOPIC_MAX_DELIVER", "1")
		_, err = js.Publish(ctx, subject, []byte("good"))
		Expect(err).NotTo(HaveOccurred())
		_, err = js.Publish(ctx, subject, []byte("bad"))
		Expect(err).NotTo(HaveOccurred())

		dlq := dlqMessages(t, js, 1)
		Expect(dlq[0].Header.Get(provision.HeaderReason)).To(ContainSubstring(
			`output topic orders.done failed: the app's response: invalid CloudEvent: ce-time: "yesterday" is not an RFC 3339 timestamp`))
		out, err := js.Stream(ctx, "OUT")
		Expect(err).NotTo(HaveOccurred())
		Expect(out.CachedInfo().State.Msgs).To(Equal(uint64(1)))
		m, err := out.GetMsg(ctx, 1)
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Header.Get("ce-id")).To(Equal("done%20good"))
		Expect(m.Header.Get("ce-datacontenttype")).To(Equal("application/json"))
		Expect(m.Header.Get("Content-Type")).To(BeEmpty())
		// The SDK's JetStream receiver reads it as the event the app sent.
		e, err := binding.ToEvent(ctx, nats_jetstream.NewMessage(&nats.Msg{Header: m.Header, Data: m.Data}))
		Expect(err).NotTo(HaveOccurred())
		Expect(e.Validate()).To(Succeed())
		Expect(e.Type()).To(Equal("com.example.order.done"))
		Expect(e.DataContentType()).To(Equal("application/json"))
	})
}
