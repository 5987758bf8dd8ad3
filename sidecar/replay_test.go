package sidecar_test

import (
	"context"
	"strconv"
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

func TestReplay(t *testing.T) {
	spec.Run(t, "replay", testReplay, spec.Report(report.Terminal{}))
}

func testReplay(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		guidA      = "6f1c2a4e-0000-4000-8000-0000000000ra"
		guidB      = "6f1c2a4e-0000-4000-8000-0000000000rb"
		ctx        = context.Background()
	)

	it("re-delivers a window of a topic's events, acked by every app, to one app only", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		mapApps(t, js, "orders", mapping.Defaults(), guidA, guidB)
		// Published while no app runs, so the archive has copied them before
		// any is acked (it can miss events acked faster than it copies:
		// docs/design.md, "Replay window").
		publishN(t, js, "orders", 3, "e")
		archive, err := js.Stream(ctx, provision.ArchiveStreamName("orders"))
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() uint64 {
			info, err := archive.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			return info.State.Msgs
		}, 10*time.Second).Should(Equal(uint64(3)))
		appA := newApp(t, 0, nil).start(t)
		appB := newApp(t, 0, nil).start(t)
		startSidecar(t, env(guidA, appA.port, srv.URL()))
		startSidecar(t, env(guidB, appB.port, srv.URL()))
		Eventually(appA.bodies, 10*time.Second).Should(Equal(map[string]int{"e0": 1, "e1": 1, "e2": 1}))
		Eventually(appB.bodies, 10*time.Second).Should(Equal(map[string]int{"e0": 1, "e1": 1, "e2": 1}))
		// Every app acked them: the topic stream is empty, the archive is not.
		Eventually(func() uint64 {
			s, err := js.Stream(ctx, topic.StreamName("orders"))
			Expect(err).NotTo(HaveOccurred())
			info, err := s.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			return info.State.Msgs
		}, 10*time.Second).Should(BeZero())
		second, err := archive.GetMsg(ctx, 2)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(second.Data)).To(Equal("e1"))
		first := map[string]string{}
		for _, d := range appA.deliveries() {
			first[d.Body] = d.Header.Get("Ce-Id")
		}

		m, err := ops.AppMapping(ctx, js, guidA)
		Expect(err).NotTo(HaveOccurred())
		r, err := ops.Replay(ctx, js, m, "orders", second.Time, time.Time{}, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Events).To(Equal(2))
		Eventually(appA.bodies, 10*time.Second).Should(Equal(map[string]int{"e0": 1, "e1": 2, "e2": 2}))
		// The same ce-id; ce-time is when the archive stored the event.
		for i, d := range appA.deliveries() {
			Expect(d.Header.Get("Ce-Id")).To(Equal(first[d.Body]))
			if i >= 3 {
				Expect(d.Header.Get("Ce-Time")).To(Equal(second.Time.UTC().Format(time.RFC3339Nano)), "e1's archive time")
				break
			}
		}
		// B got nothing again: its consumers saw no new event.
		Expect(appB.bodies()).To(Equal(map[string]int{"e0": 1, "e1": 1, "e2": 1}))
		Expect(consumerInfo(t, js, topic.StreamName("orders"), guidB).Delivered.Consumer).To(Equal(uint64(3)))
		_, err = js.Consumer(ctx, topic.RedriveStream, topic.RedriveConsumerName(guidB))
		Expect(err).To(MatchError(jetstream.ErrConsumerNotFound), "B has no consumer on the per-app path")

		// --until bounds the window (exclusive).
		r, err = ops.Replay(ctx, js, m, "orders", time.Time{}, second.Time, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Events).To(Equal(1))
		Eventually(appA.bodies, 10*time.Second).Should(Equal(map[string]int{"e0": 2, "e1": 2, "e2": 2}))
	})

	it("replays every event of a window exactly once, even those a fast app acked before anything else happened", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		settings := mapping.Defaults()
		settings.Concurrency = 8
		mapApps(t, js, "fast", settings, guidA)
		app := newApp(t, 0, nil).start(t)
		startSidecar(t, env(guidA, app.port, srv.URL()))
		Eventually(func() int {
			return consumerInfo(t, js, topic.StreamName("fast"), guidA).NumWaiting
		}, 10*time.Second).Should(BeNumerically(">", 0), "the sidecar is pulling")

		const n = 40
		since := time.Now()
		publishN(t, js, "fast", n, "f")
		want := map[string]int{}
		for i := range n {
			want["f"+strconv.Itoa(i)] = 1
		}
		Eventually(app.bodies, 10*time.Second).Should(Equal(want))
		m, err := ops.AppMapping(ctx, js, guidA)
		Expect(err).NotTo(HaveOccurred())
		r, err := ops.Replay(ctx, js, m, "fast", since, time.Time{}, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Events).To(Equal(n), "the archive holds every event of the window")
		for k := range want {
			want[k] = 2
		}
		Eventually(app.bodies, 10*time.Second).Should(Equal(want))
		Eventually(func() uint64 {
			return consumerInfo(t, js, topic.RedriveStream, topic.RedriveConsumerName(guidA)).AckFloor.Stream
		}, 10*time.Second).Should(Equal(uint64(n)), "every replayed event was taken")
		Expect(app.bodies()).To(Equal(want), "and none came a third time")
	})

	it("refuses a topic without a replay window, and a window older than what migrate-streams started keeping", func() {
		srv := natstest.Run(t)
		js := jsFor(t, srv.Connect())
		_, err := provision.EnsureTopicStream(ctx, js, "old.topic", provision.StreamOptions{ReplayWindow: -1})
		Expect(err).NotTo(HaveOccurred())
		m := mapping.Mapping{AppGUID: guidA, Topics: []string{"old.topic"}, Settings: mapping.Defaults()}
		before := time.Now().Add(-time.Hour)
		_, err = ops.Replay(ctx, js, m, "old.topic", before, time.Time{}, provision.StreamOptions{})
		Expect(err).To(MatchError(ops.ErrNoArchive))
		Expect(err).To(MatchError(ContainSubstring("hottopic migrate-streams")))

		dry, err := ops.MigrateStreams(ctx, js, provision.StreamOptions{}, true)
		Expect(err).NotTo(HaveOccurred())
		Expect(dry).To(Equal([]ops.Migrated{{Topic: "old.topic", Stream: "HT_old_topic", Archive: "HTA_old_topic"}}))
		_, err = js.Stream(ctx, "HTA_old_topic")
		Expect(err).To(HaveOccurred(), "a dry run changes nothing")
		done, err := ops.MigrateStreams(ctx, js, provision.StreamOptions{}, false)
		Expect(err).NotTo(HaveOccurred())
		Expect(done[0].Created).To(BeTrue())
		again, err := ops.MigrateStreams(ctx, js, provision.StreamOptions{}, false)
		Expect(err).NotTo(HaveOccurred())
		Expect(again[0].Created).To(BeFalse())
		Expect(again[0].Had).To(BeTrue())

		_, err = ops.Replay(ctx, js, m, "old.topic", before, time.Time{}, provision.StreamOptions{})
		Expect(err).To(MatchError(ops.ErrOutsideWindow))
		r, err := ops.Replay(ctx, js, m, "old.topic", time.Now(), time.Time{}, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Events).To(BeZero())

		_, err = ops.Replay(ctx, js, m, "other", time.Now(), time.Time{}, provision.StreamOptions{})
		Expect(err).To(MatchError("the app is not mapped to topic other"))
		_, err = ops.MigrateStreams(ctx, js, provision.StreamOptions{ReplayWindow: -1}, false)
		Expect(err).To(MatchError(ContainSubstring("the replay window is off")))
	})
}
