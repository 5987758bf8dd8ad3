package sidecar_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
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

func TestBatch(t *testing.T) {
	spec.Run(t, "batch", testBatch, spec.Report(report.Terminal{}))
}

// batchIDs is the ce ids of a batch delivery, read by the CloudEvents SDK.
func batchIDs(d delivery) []string {
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(d.Body))
	req.Header = d.Header.Clone()
	evs, err := cehttp.NewEventsFromHTTPRequest(req)
	if err != nil {
		return []string{"not a batch: " + err.Error()}
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID()
	}
	return ids
}

func testBatch(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		srv        *natstest.Server
		js         jetstream.JetStream
		guid       = "6f1c2a4e-0000-4000-8000-0000000000b1"
		stream     = topic.StreamName("orders.created")
	)

	it.Before(func() {
		srv = natstest.Run(t)
		js = jsFor(t, srv.Connect())
	})

	start := func(app *testApp, extra ...string) *proctest.Proc {
		e := env(guid, app.port, srv.URL(), append([]string{"HOTTOPIC_TOPICS", "orders.created"}, extra...)...)
		p := startSidecar(t, e)
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
		return p
	}
	// publish sends events with the given ids (Nats-Msg-Id, so ce-id) one by one.
	publish := func(ids ...string) {
		for _, id := range ids {
			h := nats.Header{}
			h.Set(jetstream.MsgIDHeader, id)
			h.Set("Content-Type", "application/json")
			_, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "orders.created", Header: h, Data: []byte(`{"id":"` + id + `"}`)})
			Expect(err).NotTo(HaveOccurred())
		}
	}
	// batches is every delivery as its ce ids, in order of arrival.
	batches := func(app *testApp) func() [][]string {
		return func() [][]string {
			var out [][]string
			for _, d := range app.deliveries() {
				out = append(out, batchIDs(d))
			}
			return out
		}
	}
	settled := func() int { return consumerInfo(t, js, stream, guid).NumAckPending }

	it("POSTs one CloudEvents batch that the SDK reads, with the attributes of single deliveries, and acks every event on 2xx", func() {
		app := newApp(t, 0, nil).start(t)
		start(app, "HOTTOPIC_BATCH_SIZE", "3", "HOTTOPIC_BATCH_WAIT_MS", "60000", "HOTTOPIC_PATH", "/batch")
		ctx := context.Background()
		// A plain JSON event, a binary event with a text payload, a structured one.
		publish("order 1")
		h := nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"b1"}, "ce-source": {"/src"}, "ce-type": {"com.example.t"}, "ce-color": {"caf%C3%A9"}, "Content-Type": {"text/plain"}}
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: "orders.created", Header: h, Data: []byte("hello")})
		Expect(err).NotTo(HaveOccurred())
		_, err = js.Publish(ctx, "orders.created", []byte(`{"specversion":"1.0","id":"s1","source":"/s","type":"t","count":3,"data":{"a":1}}`))
		Expect(err).NotTo(HaveOccurred())

		Eventually(batches(app), 10*time.Second).Should(Equal([][]string{{"order 1", "b1", "s1"}}))
		d := app.deliveries()[0]
		Expect(d.Header.Get("Content-Type")).To(Equal("application/cloudevents-batch+json"))
		Expect(d.Header.Get("X-Path")).To(Equal("/batch"))
		Expect(d.Header.Get("Hottopic-Topic")).To(Equal("orders.created"))
		Expect(d.Header.Get("Hottopic-Delivery")).To(Equal("1"))
		Expect(d.Header.Get("Ce-Id")).To(BeEmpty())

		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(d.Body))
		req.Header = d.Header.Clone()
		evs, err := cehttp.NewEventsFromHTTPRequest(req)
		Expect(err).NotTo(HaveOccurred())
		Expect(evs).To(HaveLen(3))
		for _, e := range evs {
			Expect(e.Validate()).To(Succeed())
		}
		Expect(evs[0].Source()).To(Equal("hottopic:orders.created"))
		Expect(evs[0].Type()).To(Equal("hottopic.event"))
		Expect(evs[0].Subject()).To(Equal("orders.created"))
		Expect(evs[0].Time().IsZero()).To(BeFalse())
		Expect(evs[0].DataContentType()).To(Equal("application/json"))
		Expect(string(evs[0].Data())).To(Equal(`{"id":"order 1"}`))
		Expect(evs[1].Source()).To(Equal("/src"))
		Expect(evs[1].Extensions()["color"]).To(Equal("café"))
		Expect(evs[1].DataContentType()).To(Equal("text/plain"))
		Expect(string(evs[1].Data())).To(Equal("hello"))
		Expect(evs[2].Extensions()["count"]).To(BeEquivalentTo(3))
		Expect(string(evs[2].Data())).To(Equal(`{"a":1}`))

		Eventually(func() uint64 { return consumerInfo(t, js, stream, guid).AckFloor.Stream }, 5*time.Second).Should(Equal(uint64(3)))
	})

	it("lets a partial batch wait batch-wait-ms to fill", func() {
		app := newApp(t, 0, nil).start(t)
		p := start(app, "HOTTOPIC_BATCH_SIZE", "5", "HOTTOPIC_BATCH_WAIT_MS", "60000")
		publish("a", "b", "c", "d", "e", "f") // one by one, each stored before the next
		Eventually(batches(app), 10*time.Second).Should(Equal([][]string{{"a", "b", "c", "d", "e"}}))
		// The sixth waits for company; shutdown ends the wait and delivers it.
		Eventually(settled, 5*time.Second).Should(Equal(1))
		Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
		Eventually(p.Exited, 15*time.Second).Should(BeTrue())
		Expect(p.ExitCode()).To(Equal(0))
		Expect(batches(app)()).To(Equal([][]string{{"a", "b", "c", "d", "e"}, {"f"}}))
		Eventually(settled, 5*time.Second).Should(Equal(0))
	})

	it("retries alone, with backoff, only the events the answer names; ignores unknown ids, said once", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			if d.Header.Get("Hottopic-Delivery") == "1" {
				_, _ = w.Write([]byte(`{"batchItemFailures":[{"itemIdentifier":"b"},{"itemIdentifier":"d"},{"itemIdentifier":"nope"}]}`))
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}).start(t)
		p := start(app, "HOTTOPIC_BATCH_SIZE", "4", "HOTTOPIC_BATCH_WAIT_MS", "60000")
		publish("a", "b", "c", "d")
		Eventually(func() [][]string {
			b := batches(app)()
			if len(b) == 3 { // the two retries may come in either order
				sort.Slice(b[1:], func(i, j int) bool { return b[1+i][0] < b[1+j][0] })
			}
			return b
		}, 15*time.Second).Should(Equal([][]string{{"a", "b", "c", "d"}, {"b"}, {"d"}}))
		for _, d := range app.deliveries()[1:] {
			Expect(d.Header.Get("Hottopic-Delivery")).To(Equal("2"))
		}
		Eventually(settled, 5*time.Second).Should(Equal(0))
		Expect(p.Output()).To(ContainSubstring("not in the batch"))
		Expect(p.Output()).To(ContainSubstring("item_identifiers=nope"))
		Expect(p.Output()).To(ContainSubstring("named in batchItemFailures"))
	})

	it("keeps max-deliver and dead letters per event, with the reason", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"batchItemFailures":[{"itemIdentifier":"bad"}]}`))
		}).start(t)
		start(app, "HOTTOPIC_BATCH_SIZE", "3", "HOTTOPIC_BATCH_WAIT_MS", "60000", "HOTTOPIC_MAX_DELIVER", "2")
		publish("ok1", "bad", "ok2")
		dlq := dlqMessages(t, js, 1)
		Expect(string(dlq[0].Data)).To(Equal(`{"id":"bad"}`))
		Expect(dlq[0].Header.Get(provision.HeaderDeliveries)).To(Equal("2"))
		Expect(dlq[0].Header.Get(provision.HeaderReason)).To(Equal("max deliveries (2) reached; last: HTTP 200 OK: named in batchItemFailures"))
		Expect(batches(app)()).To(Equal([][]string{{"ok1", "bad", "ok2"}, {"bad"}}))
		Eventually(settled, 5*time.Second).Should(Equal(0))
	})

	it("dead-letters every event of a batch answered with another 4xx, each with the reason", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = w.Write([]byte(`{"error":"no"}`))
		}).start(t)
		start(app, "HOTTOPIC_BATCH_SIZE", "2", "HOTTOPIC_BATCH_WAIT_MS", "60000")
		publish("x", "y")
		dlq := dlqMessages(t, js, 2)
		for i, m := range dlq {
			Expect(m.Header.Get(provision.HeaderReason)).To(Equal(`HTTP 422 Unprocessable Entity: {"error":"no"}`))
			Expect(m.Header.Get(provision.HeaderDeliveries)).To(Equal("1"))
			Expect(m.Header.Get(provision.HeaderStreamSequence)).To(Equal(strconv.Itoa(i + 1)))
		}
		Expect(batches(app)()).To(Equal([][]string{{"x", "y"}}))
	})

	for _, c := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		reason string
	}{
		{"a 5xx", func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }, "HTTP 503 Service Unavailable"},
		{"a 429", func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) }, "HTTP 429 Too Many Requests"},
		{"a 408", func(w http.ResponseWriter) { w.WriteHeader(http.StatusRequestTimeout) }, "HTTP 408 Request Timeout"},
		{"a 2xx whose body is not batchItemFailures", func(w http.ResponseWriter) { _, _ = w.Write([]byte("OK")) },
			"HTTP 200 OK but the batch response is not a JSON object with batchItemFailures"},
	} {
		c := c
		it("retries the whole batch after "+c.name, func() {
			app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
				if d.Header.Get("Hottopic-Delivery") == "1" {
					c.answer(w)
					return
				}
				w.WriteHeader(http.StatusOK)
			}).start(t)
			p := start(app, "HOTTOPIC_BATCH_SIZE", "2", "HOTTOPIC_BATCH_WAIT_MS", "60000")
			publish("x", "y")
			Eventually(func() [][]string {
				b := batches(app)()
				if len(b) == 3 {
					sort.Slice(b[1:], func(i, j int) bool { return b[1+i][0] < b[1+j][0] })
				}
				return b
			}, 15*time.Second).Should(Equal([][]string{{"x", "y"}, {"x"}, {"y"}}))
			Eventually(settled, 5*time.Second).Should(Equal(0))
			Expect(p.Output()).To(ContainSubstring(c.reason))
		})
	}

	it("retries the whole batch after a timeout", func() {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			if d.Header.Get("Hottopic-Delivery") == "1" {
				<-release
			}
		}).start(t)
		p := start(app, "HOTTOPIC_BATCH_SIZE", "2", "HOTTOPIC_BATCH_WAIT_MS", "60000", "HOTTOPIC_TIMEOUT_SECONDS", "1")
		publish("x", "y")
		Eventually(func() int { return len(app.deliveries()) }, 15*time.Second).Should(Equal(3))
		Eventually(settled, 5*time.Second).Should(Equal(0))
		Expect(p.Output()).To(ContainSubstring("timeout after 1s"))
	})

	it("counts batches, not events, against concurrency", func() {
		var mu sync.Mutex
		inFlight := 0
		release := make(chan struct{})
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			mu.Lock()
			inFlight++
			mu.Unlock()
			<-release
			w.WriteHeader(http.StatusOK)
		}).start(t)
		start(app, "HOTTOPIC_BATCH_SIZE", "3", "HOTTOPIC_BATCH_WAIT_MS", "60000", "HOTTOPIC_CONCURRENCY", "2")
		ids := make([]string, 12)
		for i := range ids {
			ids[i] = "e" + strconv.Itoa(i)
		}
		publish(ids...)
		// Two batches of three are with the app at once; the sidecar holds those six only.
		Eventually(func() int { mu.Lock(); defer mu.Unlock(); return inFlight }, 10*time.Second).Should(Equal(2))
		Eventually(settled, 5*time.Second).Should(Equal(6))
		for _, b := range batches(app)() {
			Expect(b).To(HaveLen(3))
		}
		info := consumerInfo(t, js, stream, guid)
		Expect(info.NumPending).To(Equal(uint64(6)))
		close(release)
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(4), func() string {
			ci := consumerInfo(t, js, stream, guid)
			return fmt.Sprintf("batches %v pending %d ackpending %d waiting %d", batches(app)(), ci.NumPending, ci.NumAckPending, ci.NumWaiting)
		})
		got := map[string]int{}
		for _, b := range batches(app)() {
			Expect(b).To(HaveLen(3))
			for _, id := range b {
				got[id]++
			}
		}
		Expect(got).To(HaveLen(12))
		Eventually(settled, 5*time.Second).Should(Equal(0))
	})

	it("keeps batch-size 1 on one event per POST in binary mode", func() {
		app := newApp(t, 0, nil).start(t)
		start(app, "HOTTOPIC_BATCH_SIZE", "1")
		publish("one")
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(1))
		d := app.deliveries()[0]
		Expect(d.Header.Get("Ce-Id")).To(Equal("one"))
		Expect(d.Body).To(Equal(`{"id":"one"}`))
	})

	it("runs the sensors example (Python) as its manifest maps it", func() {
		if _, err := exec.LookPath("python3"); err != nil {
			t.Skip("python3 not on PATH")
		}
		port := freePort(t)
		cmd := exec.Command("python3", "../examples/sensors/app.py")
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
		py := proctest.Start(t, cmd)
		Eventually(py.Output, 10*time.Second).Should(ContainSubstring("listening"))
		p := startSidecar(t, env(guid, port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created",
			"HOTTOPIC_BATCH_SIZE", "100", "HOTTOPIC_BATCH_WAIT_MS", "50", "HOTTOPIC_MAX_DELIVER", "2"))
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
		ctx := context.Background()
		for i := 0; i < 10; i++ {
			_, err := js.Publish(ctx, "orders.created", []byte(`{"sensor":"s`+strconv.Itoa(i)+`","celsius":20}`))
			Expect(err).NotTo(HaveOccurred())
		}
		_, err := js.Publish(ctx, "orders.created", []byte("not a reading"))
		Expect(err).NotTo(HaveOccurred())
		dlq := dlqMessages(t, js, 1)
		Expect(string(dlq[0].Data)).To(Equal("not a reading"))
		Expect(dlq[0].Header.Get(provision.HeaderReason)).To(Equal("max deliveries (2) reached; last: HTTP 200 OK: named in batchItemFailures"))
		Eventually(settled, 5*time.Second).Should(Equal(0))
		Expect(py.Output()).To(MatchRegexp(`batch of \d+ \(delivery 1\): \d+ readings, mean 20\.0`))
	})

	it("refuses a bad batch setting with one line naming the variable", func() {
		app := newApp(t, 0, nil).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_BATCH_SIZE", "0"))
		Eventually(p.Exited, 10*time.Second).Should(BeTrue())
		Expect(p.Output()).To(ContainSubstring("HOTTOPIC_BATCH_SIZE: batch-size must be between 1 and 1000, got 0"))
	})
}
