package sidecar_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestRedrive(t *testing.T) {
	spec.Run(t, "redrive", testRedrive, spec.Report(report.Terminal{}))
}

func testRedrive(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		guidA      = "6f1c2a4e-0000-4000-8000-00000000000a"
		guidB      = "6f1c2a4e-0000-4000-8000-00000000000b"
		ctx        = context.Background()
	)

	it("sends dead letters back to their app only, removes them once taken, and keeps the history of one that fails again", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		settings := mapping.Defaults()
		settings.MaxDeliver = 2
		mapApps(t, js, "orders", settings, guidA, guidB)
		// A rejects everything at first; later only "e2". B takes everything.
		var fixed atomic.Bool
		appA := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			if !fixed.Load() || d.Body == "e2" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
		}).start(t)
		appB := newApp(t, 0, nil).start(t)
		startSidecar(t, env(guidA, appA.port, srv.URL()))
		startSidecar(t, env(guidB, appB.port, srv.URL()))

		publishN(t, js, "orders", 3, "e")
		Eventually(appB.bodies, 10*time.Second).Should(Equal(map[string]int{"e0": 1, "e1": 1, "e2": 1}))
		var letters []ops.Letter
		Eventually(func() int {
			var err error
			letters, err = ops.List(ctx, js, ops.Filter{App: guidA})
			Expect(err).NotTo(HaveOccurred())
			return len(letters)
		}, 10*time.Second).Should(Equal(3))
		Expect(letters[0].ID).To(BeNumerically(">", letters[1].ID), "newest first")
		Expect(letters[0].Reason).To(Equal("HTTP 400 Bad Request"))
		first := map[string]string{} // body → ce-id at first delivery
		for _, d := range appA.deliveries() {
			first[d.Body] = d.Header.Get("Ce-Id")
		}
		none, err := ops.List(ctx, js, ops.Filter{App: guidB})
		Expect(err).NotTo(HaveOccurred())
		Expect(none).To(BeEmpty())

		fixed.Store(true)
		m, err := ops.AppMapping(ctx, js, guidA)
		Expect(err).NotTo(HaveOccurred())
		t0 := time.Now()
		out, err := ops.Redrive(ctx, js, m, letters, provision.StreamOptions{}, 30*time.Second)
		Expect(err).NotTo(HaveOccurred())
		t.Log("redrive took", time.Since(t0))
		Expect(out.Redriven).To(Equal(2))
		Expect(out.Failed).To(Equal(1))
		Expect(out.Pending).To(Equal(0))
		Expect(out.Failures[0].Reason).To(ContainSubstring("HTTP 400"))

		// A got each event again with the same ce-id; B got nothing more.
		Expect(appA.bodies()).To(Equal(map[string]int{"e0": 2, "e1": 2, "e2": 2}))
		for _, d := range appA.deliveries() {
			Expect(d.Header.Get("Ce-Id")).To(Equal(first[d.Body]))
		}
		Expect(appB.bodies()).To(Equal(map[string]int{"e0": 1, "e1": 1, "e2": 1}))
		Expect(consumerInfo(t, js, topic.StreamName("orders"), guidB).Delivered.Consumer).To(Equal(uint64(3)))
		// A's consumer on the per-app path filters on A's subject; B has none.
		ca := consumerInfo(t, js, topic.RedriveStream, topic.RedriveConsumerName(guidA))
		Expect(ca.Config.Name).To(Equal(guidA), "named by the GUID, as its topic consumers")
		Expect(ca.Config.FilterSubject).To(Equal("hottopic.redrive." + guidA + ".>"))
		_, err = js.Consumer(ctx, topic.RedriveStream, topic.RedriveConsumerName(guidB))
		Expect(err).To(MatchError(jetstream.ErrConsumerNotFound))

		// The three letters are gone; e2's new one keeps its history.
		again, err := ops.List(ctx, js, ops.Filter{})
		Expect(err).NotTo(HaveOccurred())
		Expect(again).To(HaveLen(1))
		l := again[0]
		Expect(string(l.Data)).To(Equal("e2"))
		Expect(l.App).To(Equal(guidA))
		Expect(l.Topic).To(Equal("orders"))
		Expect(l.StreamSequence).To(Equal(uint64(3)))
		Expect(l.Deliveries).To(Equal(uint64(2)), "one attempt before, one after the redrive (400 is poison)")
		Expect(l.Redrives).To(Equal(1))
		Expect(l.PreviousReasons).To(Equal([]string{"HTTP 400 Bad Request"}))
		for _, old := range letters {
			Expect(l.ID).NotTo(Equal(old.ID))
		}
		// The per-app stream holds nothing any more (the sidecar acks or
		// terminates each event right after announcing it).
		s, err := js.Stream(ctx, topic.RedriveStream)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() uint64 {
			info, err := s.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			return info.State.Msgs
		}, 10*time.Second).Should(BeZero())

		n, err := ops.Purge(ctx, js, again)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(1))
		left, err := ops.List(ctx, js, ops.Filter{})
		Expect(err).NotTo(HaveOccurred())
		Expect(left).To(BeEmpty())
	})

	it("refuses to redrive to an app that is not mapped to the letter's topic", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		m := mapping.Mapping{AppGUID: guidA, Topics: []string{"other"}, Settings: mapping.Defaults()}
		out, err := ops.Redrive(ctx, js, m, []ops.Letter{{ID: 7, App: guidA, Topic: "orders"}}, provision.StreamOptions{}, time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(out.Failed).To(Equal(1))
		Expect(out.Failures[0].Reason).To(ContainSubstring("no longer mapped to topic orders"))
		_, err = ops.AppMapping(ctx, js, guidB)
		Expect(err).To(MatchError(ContainSubstring("has no event mapping")))
	})
}
