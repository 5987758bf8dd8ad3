package sidecar_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

func TestDelivery(t *testing.T) {
	spec.Run(t, "delivery", testDelivery, spec.Report(report.Terminal{}))
}

func testDelivery(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		srv        *natstest.Server
		js         jetstream.JetStream
		guid       = "6f1c2a4e-0000-4000-8000-000000000001"
		stream     = topic.StreamName("orders.created")
	)

	it.Before(func() {
		srv = natstest.Run(t)
		js = jsFor(t, srv.Connect())
	})

	// waitConsuming waits until the sidecar pulls (its consumer has a waiting request).
	waitConsuming := func(p *proctest.Proc) {
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
	}

	it("delivers every event once with CloudEvents headers, concurrently, and acks it", func() {
		app := newApp(t, 0, nil).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_CONCURRENCY", "4", "HOTTOPIC_PATH", "/events"))
		waitConsuming(p)

		ctx := context.Background()
		h := nats.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		h.Set("ce-type", "com.example.order")
		h.Set(jetstream.MsgIDHeader, "order-1")
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: "orders.created", Header: h, Data: []byte(`{"id":1}`)})
		Expect(err).NotTo(HaveOccurred())
		publishN(t, js, "orders.created", 200, "e")

		Eventually(func() int { return len(app.deliveries()) }, 15*time.Second).Should(Equal(201))
		for body, n := range app.bodies() {
			Expect(n).To(Equal(1), "event %s delivered %d times", body, n)
		}
		first := app.deliveries()[0]
		for _, d := range app.deliveries() {
			if d.Body == `{"id":1}` {
				first = d
			}
		}
		Expect(first.Header.Get("X-Path")).To(Equal("/events"))
		Expect(first.Header.Get("Ce-Specversion")).To(Equal("1.0"))
		Expect(first.Header.Get("Ce-Id")).To(Equal("order-1"))
		Expect(first.Header.Get("Ce-Source")).To(Equal("hottopic:orders.created"))
		Expect(first.Header.Get("Ce-Type")).To(Equal("com.example.order"))
		Expect(first.Header.Get("Ce-Subject")).To(Equal("orders.created"))
		_, err = time.Parse(time.RFC3339, first.Header.Get("Ce-Time"))
		Expect(err).NotTo(HaveOccurred())
		Expect(first.Header.Get("Content-Type")).To(Equal("application/json"))
		Expect(first.Header.Get("Traceparent")).To(Equal("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
		Expect(first.Header.Get("Hottopic-Topic")).To(Equal("orders.created"))
		Expect(first.Header.Get("Hottopic-Delivery")).To(Equal("1"))

		other := app.deliveries()[1]
		if other.Body == `{"id":1}` {
			other = app.deliveries()[0]
		}
		Expect(other.Header.Get("Ce-Id")).To(MatchRegexp(`^` + stream + `-\d+$`))
		Expect(other.Header.Get("Ce-Type")).To(Equal("hottopic.event"))
		Expect(other.Header.Get("Content-Type")).To(Equal("application/octet-stream"))

		Eventually(func() uint64 {
			info := consumerInfo(t, js, stream, guid)
			return info.AckFloor.Stream
		}, 5*time.Second).Should(Equal(uint64(201)))
	})

	it("retries 5xx with a growing Hottopic-Delivery, honouring Retry-After", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			if d.Header.Get("Hottopic-Delivery") == "1" {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created"))
		waitConsuming(p)
		publishN(t, js, "orders.created", 1, "x")
		Eventually(func() []string {
			var out []string
			for _, d := range app.deliveries() {
				out = append(out, d.Header.Get("Hottopic-Delivery"))
			}
			return out
		}, 10*time.Second).Should(Equal([]string{"1", "2"}))
		Eventually(func() int { return consumerInfo(t, js, stream, guid).NumAckPending }, 5*time.Second).Should(Equal(0))
		Expect(p.Output()).To(ContainSubstring("HTTP 503"))
	})

	it("dead-letters a 4xx at once with the Hottopic headers, the app's answer in the reason", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = w.Write([]byte("unknown sku 42\n"))
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created"))
		waitConsuming(p)
		h := nats.Header{}
		h.Set("Content-Type", "text/plain")
		_, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "orders.created", Header: h, Data: []byte("poison")})
		Expect(err).NotTo(HaveOccurred())

		dlq := dlqMessages(t, js, 1)
		Expect(dlq[0].Subject).To(Equal("hottopic.dlq.orders.created"))
		Expect(string(dlq[0].Data)).To(Equal("poison"))
		Expect(dlq[0].Header.Get("Content-Type")).To(Equal("text/plain"))
		Expect(dlq[0].Header.Get(provision.HeaderApp)).To(Equal(guid))
		Expect(dlq[0].Header.Get(provision.HeaderReason)).To(Equal(`HTTP 422 Unprocessable Entity: unknown sku 42\n`))
		Expect(dlq[0].Header.Get(provision.HeaderDeliveries)).To(Equal("1"))
		Expect(dlq[0].Header.Get(provision.HeaderStreamSequence)).To(Equal("1"))
		Expect(app.deliveries()).To(HaveLen(1))
		Eventually(func() int { return consumerInfo(t, js, stream, guid).NumAckPending }, 5*time.Second).Should(Equal(0))
	})

	it("dead-letters after max-deliver failed attempts (timeouts and connection errors count)", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			if d.Header.Get("Hottopic-Delivery") == "1" {
				time.Sleep(1500 * time.Millisecond) // longer than the 1 s timeout
			}
			w.WriteHeader(http.StatusInternalServerError)
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created",
			"HOTTOPIC_MAX_DELIVER", "2", "HOTTOPIC_TIMEOUT_SECONDS", "1"))
		waitConsuming(p)
		publishN(t, js, "orders.created", 1, "doomed")
		dlq := dlqMessages(t, js, 1)
		Expect(dlq[0].Header.Get(provision.HeaderDeliveries)).To(Equal("2"))
		Expect(dlq[0].Header.Get(provision.HeaderReason)).To(ContainSubstring("max deliveries (2)"))
		Expect(dlq[0].Header.Get(provision.HeaderReason)).To(ContainSubstring("500"))
		Expect(p.Output()).To(ContainSubstring("timeout after 1s"))
		Expect(app.deliveries()).To(HaveLen(2))
	})

	it("publishes a non-empty 2xx response body to the output topic", func() {
		ctx := context.Background()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"orders.done"}})
		Expect(err).NotTo(HaveOccurred())
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			if d.Body == "quiet" {
				w.WriteHeader(http.StatusOK)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("done:" + d.Body))
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_OUTPUT_TOPIC", "orders.done"))
		waitConsuming(p)
		_, err = js.Publish(ctx, "orders.created", []byte("quiet"))
		Expect(err).NotTo(HaveOccurred())
		_, err = js.Publish(ctx, "orders.created", []byte("a"))
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() uint64 {
			info, err := js.Stream(ctx, "OUT")
			if err != nil {
				return 0
			}
			return info.CachedInfo().State.Msgs
		}, 10*time.Second).Should(Equal(uint64(1)))
		s, err := js.Stream(ctx, "OUT")
		Expect(err).NotTo(HaveOccurred())
		m, err := s.GetMsg(ctx, 1)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(m.Data)).To(Equal("done:a"))
		Expect(m.Header.Get("Content-Type")).To(Equal("text/plain"))
	})

	it("waits for the app's port before pulling, so no attempt is burnt", func() {
		port := freePort(t)
		p := startSidecar(t, env(guid, port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created"))
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("waiting for the app"))
		// The consumer exists before the app is up: events are kept for it.
		Eventually(func() error {
			_, err := js.Consumer(context.Background(), stream, guid)
			return err
		}, 10*time.Second).Should(Succeed())
		publishN(t, js, "orders.created", 5, "early")
		Expect(p.Output()).NotTo(ContainSubstring("consuming topic"))
		app := newApp(t, port, nil).start(t)
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(5))
		for _, d := range app.deliveries() {
			Expect(d.Header.Get("Hottopic-Delivery")).To(Equal("1"))
		}
	})

	it("keeps a slow app's events (and the ones buffered behind them) from being redelivered", func() {
		ctx := context.Background()
		// The consumer's ack wait (1 s) is shorter than the app's work (1.5 s):
		// only the sidecar's deadline extension prevents duplicates.
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"orders.created"}, Retention: jetstream.InterestPolicy})
		Expect(err).NotTo(HaveOccurred())
		_, err = js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: guid, FilterSubject: "orders.created", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: 5,
		})
		Expect(err).NotTo(HaveOccurred())
		putMapping(t, js, guid, `{"app_guid":"`+guid+`","topics":["orders.created"],"concurrency":1,"timeout_seconds":10,"max_deliver":5,"path":"/"}`)
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			time.Sleep(1500 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL()))
		waitConsuming(p)
		publishN(t, js, "orders.created", 3, "slow")
		Eventually(func() uint64 { return consumerInfo(t, js, stream, guid).AckFloor.Stream }, 15*time.Second).Should(Equal(uint64(3)))
		Expect(app.bodies()).To(Equal(map[string]int{"slow0": 1, "slow1": 1, "slow2": 1}))
		Expect(consumerInfo(t, js, stream, guid).NumRedelivered).To(Equal(0))
	})

	it("on SIGTERM stops pulling, finishes in-flight deliveries, holds nothing else and exits 0", func() {
		release := make(chan struct{})
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			<-release
			w.WriteHeader(http.StatusOK)
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_CONCURRENCY", "2"))
		waitConsuming(p)
		publishN(t, js, "orders.created", 10, "t")
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(2))
		Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
		Eventually(p.Output, 5*time.Second).Should(ContainSubstring("shutting down"))
		close(release)
		Eventually(p.Exited, 12*time.Second).Should(BeTrue())
		Expect(p.ExitCode()).To(Equal(0))
		Expect(consumerInfo(t, js, stream, guid).AckFloor.Stream).To(Equal(uint64(2)))
		Expect(len(app.deliveries())).To(Equal(2))
		// The rest were never pulled (nothing is prefetched), so nothing
		// waits for an ack wait (60 s): a new instance gets them at once.
		startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_CONCURRENCY", "2"))
		Eventually(func() int { return len(app.bodies()) }, 10*time.Second).Should(Equal(10))
	})

	it("naks in-flight deliveries that do not finish within the grace period", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			time.Sleep(20 * time.Second)
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created,orders.shipped", "HOTTOPIC_TIMEOUT_SECONDS", "60"))
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("topic=orders.shipped"))
		waitConsuming(p)
		publishN(t, js, "orders.created", 1, "stuck")
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(1))
		start := time.Now()
		Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
		Eventually(p.Exited, 12*time.Second).Should(BeTrue())
		Expect(p.ExitCode()).To(Equal(0))
		Expect(time.Since(start)).To(BeNumerically("<", 10*time.Second))
		info := consumerInfo(t, js, stream, guid)
		Expect(info.NumAckPending + int(info.NumPending)).To(Equal(1)) // released, not acked
		Expect(p.Output()).To(ContainSubstring("releasing unfinished deliveries"))
		// The log counts events, not topics still draining.
		Expect(p.Output()).To(ContainSubstring(`msg="shutting down: stopped pulling" in_flight=1`))
		Expect(p.Output()).To(ContainSubstring(`msg="grace period over; releasing unfinished deliveries to other instances" in_flight=1`))
	})

	it("loses nothing when the sidecar is killed with SIGKILL mid-stream and a new one starts", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			time.Sleep(2 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
		}).start(t)
		e := env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_CONCURRENCY", "4", "HOTTOPIC_TIMEOUT_SECONDS", "1")
		p := startSidecar(t, e)
		waitConsuming(p)
		publishN(t, js, "orders.created", 300, "k")
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(BeNumerically(">=", 50))
		Expect(p.Signal(syscall.SIGKILL)).To(Succeed())
		Eventually(p.Exited, 5*time.Second).Should(BeTrue())
		startSidecar(t, e)
		Eventually(func() int { return len(app.bodies()) }, 20*time.Second).Should(Equal(300))
	})

	it("loses nothing when the NATS server restarts mid-stream", func() {
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			time.Sleep(2 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_CONCURRENCY", "4", "HOTTOPIC_TIMEOUT_SECONDS", "2"))
		waitConsuming(p)
		publishN(t, js, "orders.created", 300, "r")
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(BeNumerically(">=", 50))
		srv.Restart()
		Eventually(func() int { return len(app.bodies()) }, 30*time.Second).Should(Equal(300))
		Eventually(p.Output, 5*time.Second).Should(ContainSubstring("reconnected to NATS"))
	})
}

// dlqMessages waits for n dead letters and returns them.
func dlqMessages(t *testing.T, js jetstream.JetStream, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	g.Eventually(func() uint64 {
		s, err := js.Stream(ctx, topic.DLQStream)
		if err != nil {
			return 0
		}
		return s.CachedInfo().State.Msgs
	}, 15*time.Second).Should(Equal(uint64(n)))
	s, err := js.Stream(ctx, topic.DLQStream)
	g.Expect(err).NotTo(HaveOccurred())
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); len(out) < n; seq++ {
		m, err := s.GetMsg(ctx, seq)
		g.Expect(err).NotTo(HaveOccurred(), fmt.Sprint("dead letter ", seq))
		out = append(out, m)
	}
	return out
}

func putMapping(t *testing.T, js jetstream.JetStream, guid, value string) jetstream.KeyValue {
	t.Helper()
	ctx := context.Background()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hottopic_mappings"})
	if err != nil {
		t.Fatal(err)
	}
	if value != "" {
		if _, err := kv.Put(ctx, guid, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	return kv
}

var _ = strconv.Itoa
var _ = strings.Contains
