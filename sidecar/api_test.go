package sidecar_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestAPI(t *testing.T) {
	spec.Run(t, "sidecar API", testAPI, spec.Report(report.Terminal{}))
}

func testAPI(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		guid       = "6f1c2a4e-0000-4000-8000-0000000000bb"
	)

	it("publishes (202 once stored, de-duplicated), refuses bad topics, reports health and metrics, 503 without NATS", func() {
		srv := natstest.Run(t)
		nc := srv.Connect()
		js := jsFor(t, nc)
		ctx := context.Background()
		// A consumer on the target topic, so the interest stream keeps what we publish.
		_, err := provision.EnsureTopicStream(ctx, js, "orders.created", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = provision.EnsureConsumer(ctx, js, "reader", "", "orders.created", mapping.Defaults())
		Expect(err).NotTo(HaveOccurred())

		app := newApp(t, 0, nil).start(t)
		lp := freePort(t)
		e := env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "in.events")
		e["HOTTOPIC_LISTEN"] = "127.0.0.1:" + strconv.Itoa(lp)
		mp := freePort(t)
		e["HOTTOPIC_METRICS_LISTEN"] = "127.0.0.1:" + strconv.Itoa(mp)
		p := startSidecar(t, e)
		base := "http://127.0.0.1:" + strconv.Itoa(lp)
		Eventually(func() error { _, err := http.Get(base + "/healthz"); return err }, 10*time.Second).Should(Succeed())

		post := func(path, msgID, body string) (int, string) {
			req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if msgID != "" {
				req.Header.Set("Nats-Msg-Id", msgID)
			}
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}

		code, body := post("/publish/orders.created", "id-1", `{"n":1}`)
		Expect(code).To(Equal(http.StatusAccepted))
		Expect(body).To(ContainSubstring(`"sequence":1`))
		code, body = post("/publish/orders.created", "id-1", `{"n":1}`)
		Expect(code).To(Equal(http.StatusAccepted))
		Expect(body).To(ContainSubstring(`"duplicate":true`))
		s, err := js.Stream(ctx, topic.StreamName("orders.created"))
		Expect(err).NotTo(HaveOccurred())
		stored, err := s.GetMsg(ctx, 1)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(stored.Data)).To(Equal(`{"n":1}`))
		Expect(stored.Header.Get("Content-Type")).To(Equal("application/json"))
		Expect(s.CachedInfo().State.Msgs).To(BeNumerically("<=", 1))

		// A topic no app is mapped to has no stream: the event would be
		// thrown away, so it is refused, and no stream is made.
		code, body = post("/publish/brand.new", "", "x")
		Expect(code).To(Equal(http.StatusConflict))
		Expect(body).To(ContainSubstring("no stream stores topic brand.new yet: map an app to it first"))
		_, err = js.Stream(ctx, topic.StreamName("brand.new"))
		Expect(err).To(MatchError(jetstream.ErrStreamNotFound))
		// Not even when something else listens on the subject.
		sub, err := nc.SubscribeSync("brand.new")
		Expect(err).NotTo(HaveOccurred())
		code, body = post("/publish/brand.new", "", "x")
		Expect(code).To(Equal(http.StatusConflict))
		Expect(body).To(ContainSubstring("no stream stores topic brand.new yet"))
		Expect(sub.Unsubscribe()).To(Succeed())

		code, body = post("/publish/orders.*", "", "x")
		Expect(code).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring("wildcards"))
		code, body = post("/publish/hottopic.dlq.x", "", "x")
		Expect(code).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring("reserved"))

		resp, err := http.Get(base + "/healthz")
		Expect(err).NotTo(HaveOccurred())
		hb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(jsonMap(hb)).To(HaveKeyWithValue("mode", "static"))

		// One delivery, so every metric family has a sample. The sidecar's
		// consumer starts after the stream's last event when it is made, so
		// publish once it consumes.
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
		_, err = js.Publish(ctx, "in.events", []byte("m"))
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(1))
		Eventually(func() string {
			resp, err := http.Get(base + "/metrics")
			if err != nil {
				return ""
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}, 5*time.Second).Should(And(
			ContainSubstring(`hottopic_sidecar_deliveries_total{outcome="success",topic="in.events"} 1`),
			ContainSubstring(`hottopic_sidecar_delivery_duration_seconds_bucket{topic="in.events",le=`),
			ContainSubstring(`hottopic_sidecar_in_flight{topic="in.events"} 0`),
			ContainSubstring(`hottopic_sidecar_redeliveries_total{topic="in.events"} 0`),
			ContainSubstring(`hottopic_sidecar_dead_letters_total{reason="rejected",topic="in.events"} 0`),
			// by the topic published to
			ContainSubstring(`hottopic_sidecar_publishes_total{result="ok",source="api",topic="orders.created"} 2`),
			ContainSubstring(`hottopic_sidecar_publishes_total{result="error",source="api",topic="brand.new"} 2`),
		))

		// The metrics-only listener serves the same metrics and nothing else.
		metricsBase := "http://127.0.0.1:" + strconv.Itoa(mp)
		resp, err = http.Get(metricsBase + "/metrics")
		Expect(err).NotTo(HaveOccurred())
		mb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(string(mb)).To(ContainSubstring(`hottopic_sidecar_deliveries_total{outcome="success",topic="in.events"} 1`))
		for _, path := range []string{"/healthz", "/publish/orders.created"} {
			resp, err = http.Post(metricsBase+path, "text/plain", strings.NewReader("x"))
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(http.StatusNotFound), path)
		}

		srv.Shutdown()
		Eventually(func() int { c, _ := post("/publish/orders.created", "", "late"); return c }, 10*time.Second).Should(Equal(http.StatusServiceUnavailable))
		resp, err = http.Get(base + "/healthz")
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusServiceUnavailable))
		Expect(p.Exited()).To(BeFalse())
	})
	it("ends a request whose body does not come (no slow-body connection is held)", func() {
		srv := natstest.Run(t)
		app := newApp(t, 0, nil).start(t)
		lp := freePort(t)
		e := env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "in.events")
		e["HOTTOPIC_LISTEN"] = "127.0.0.1:" + strconv.Itoa(lp)
		startSidecar(t, e)
		addr := "127.0.0.1:" + strconv.Itoa(lp)
		Eventually(func() error { _, err := http.Get("http://" + addr + "/healthz"); return err }, 10*time.Second).Should(Succeed())
		c, err := net.Dial("tcp", addr)
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		_, err = io.WriteString(c, "POST /publish/in.events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
		Expect(err).NotTo(HaveOccurred())
		// A bound for the test only: the sidecar must end it well before.
		Expect(c.SetReadDeadline(time.Now().Add(2 * time.Minute))).To(Succeed())
		_, err = io.ReadAll(bufio.NewReader(c)) // an answer, then the close
		Expect(err).NotTo(HaveOccurred())
	})
}
