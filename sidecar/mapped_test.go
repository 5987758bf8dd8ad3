package sidecar_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestMapped(t *testing.T) {
	spec.Run(t, "mapped mode", testMapped, spec.Report(report.Terminal{}))
}

func testMapped(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect       = NewWithT(t).Expect
		Eventually   = NewWithT(t).Eventually
		Consistently = NewWithT(t).Consistently
		guid         = "6f1c2a4e-0000-4000-8000-0000000000aa"
	)

	it("idles until its KV key exists, then follows changes and deletion live", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		ctx := context.Background()
		// The scaler's part: streams and consumers for both topics.
		for _, tp := range []string{"a.events", "b.events"} {
			_, err := provision.EnsureTopicStream(ctx, js, tp, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureConsumer(ctx, js, guid, "", tp, mapping.Defaults())
			Expect(err).NotTo(HaveOccurred())
		}
		app := newApp(t, 0, nil).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL()))
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("no event mapping for this app yet"))

		kv := putMapping(t, js, guid, "")
		publishN(t, js, "a.events", 2, "unmapped")
		Consistently(func() int { return len(app.deliveries()) }, time.Second).Should(Equal(0))

		put := func(m mapping.Mapping) {
			b, err := m.Encode()
			Expect(err).NotTo(HaveOccurred())
			_, err = kv.Put(ctx, guid, b)
			Expect(err).NotTo(HaveOccurred())
		}
		m := mapping.Mapping{AppGUID: guid, Topics: []string{"a.events"}, Settings: mapping.Defaults()}
		m.Path = "/a"
		put(m)
		// Events kept for the consumer while the app was unmapped are delivered now.
		Eventually(func() map[string]int { return app.bodies() }, 10*time.Second).Should(Equal(map[string]int{"unmapped0": 1, "unmapped1": 1}))
		Expect(strings.Count(p.Output(), "no event mapping")).To(Equal(1)) // idle is said once

		m.Topics = []string{"b.events"}
		m.Path = "/b"
		put(m)
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring(`msg="stopped consuming topic" topic=a.events`))
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring(`msg="consuming topic" topic=b.events`))
		publishN(t, js, "b.events", 1, "b")
		publishN(t, js, "a.events", 1, "a-after-unmap")
		Eventually(func() int { return app.bodies()["b0"] }, 10*time.Second).Should(Equal(1))
		Consistently(func() int { return app.bodies()["a-after-unmap0"] }, time.Second).Should(Equal(0))
		for _, d := range app.deliveries() {
			if d.Body == "b0" {
				Expect(d.Header.Get("X-Path")).To(Equal("/b"))
			}
		}

		Expect(kv.Delete(ctx, guid)).To(Succeed())
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("event mapping removed; idle"))
		publishN(t, js, "b.events", 1, "b-after-delete")
		Consistently(func() int { return app.bodies()["b-after-delete0"] }, time.Second).Should(Equal(0))
	})

	it("delivers again once its lost mapping bucket, stream and consumer are made again", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		ctx := context.Background()
		provisionAll := func() {
			_, err := provision.EnsureTopicStream(ctx, js, "a.events", provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureConsumer(ctx, js, guid, "", "a.events", mapping.Defaults())
			Expect(err).NotTo(HaveOccurred())
			b, err := (mapping.Mapping{AppGUID: guid, Topics: []string{"a.events"}, Settings: mapping.Defaults()}).Encode()
			Expect(err).NotTo(HaveOccurred())
			putMapping(t, js, guid, string(b))
		}
		provisionAll()
		app := newApp(t, 0, nil).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL()))
		publishN(t, js, "a.events", 1, "before")
		Eventually(func() int { return app.bodies()["before0"] }, 10*time.Second).Should(Equal(1), p.Output)

		// Lost: deleted by hand (or a NATS restart without its store); then
		// made again, as the scaler does.
		Expect(js.DeleteKeyValue(ctx, mapping.Bucket)).To(Succeed())
		Expect(js.DeleteStream(ctx, "HT_a_events")).To(Succeed())
		provisionAll()
		publishN(t, js, "a.events", 3, "after")
		Eventually(func() map[string]int { return app.bodies() }, 20*time.Second).Should(Equal(map[string]int{"before0": 1, "after0": 1, "after1": 1, "after2": 1}), p.Output)
	})

	it("ignores an invalid mapping value and keeps the current one", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		ctx := context.Background()
		_, err := provision.EnsureTopicStream(ctx, js, "a.events", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = provision.EnsureConsumer(ctx, js, guid, "", "a.events", mapping.Defaults())
		Expect(err).NotTo(HaveOccurred())
		kv := putMapping(t, js, guid, `{"app_guid":"`+guid+`","topics":["a.events"],"concurrency":1,"path":"/","timeout_seconds":60,"max_deliver":5}`)
		app := newApp(t, 0, nil).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL()))
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
		_, err = kv.Put(ctx, guid, []byte(`{"topics":["a.*"]}`))
		Expect(err).NotTo(HaveOccurred())
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("ignoring invalid event mapping"))
		publishN(t, js, "a.events", 1, "still")
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(1))
	})

	_ = jetstream.KeyValuePut
}
