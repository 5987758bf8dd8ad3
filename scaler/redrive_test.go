package scaler_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

// A redriven event whose deliveries run out with no sidecar alive is
// dead-lettered by the scaler with its history, as the sidecar would.
func TestRedriveAdvisory(t *testing.T) {
	g := NewWithT(t)
	Expect, Eventually := g.Expect, g.Eventually
	ctx := context.Background()
	ns := natstest.Run(t)
	js, err := jetstream.New(ns.Connect())
	Expect(err).NotTo(HaveOccurred())
	cc := ccdouble.New(t)
	space := cc.AddSpace(cc.AddOrg("acme"), "prod")
	cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(space))
	guid := cc.AddApp(space, "crasher", map[string]string{mapping.LabelMapped: "true"},
		map[string]string{mapping.AnnTopics: "payments", mapping.AnnMaxDeliver: "2", mapping.AnnTimeout: "1"})
	p, err := cfplatform.New(cfplatform.Config{API: cc.URL(), ClientID: "hottopic-scaler", ClientSecret: "s3cret", CacheTTL: 300 * time.Millisecond})
	Expect(err).NotTo(HaveOccurred())
	s := scaler.New(js, p, scaler.WithPollInterval(50*time.Millisecond), scaler.WithDiscoveryInterval(150*time.Millisecond),
		scaler.WithLeaderTTL(time.Second), scaler.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(sctx) }()
	t.Cleanup(func() { cancel(); <-done })
	Eventually(s.Leader, 10*time.Second).Should(BeTrue())
	Eventually(func() error { _, err := js.Stream(ctx, "HOTTOPIC_ADVISORIES"); return err }, 10*time.Second).Should(Succeed())

	ack, err := provision.PublishDeadLetter(ctx, js, provision.DeadLetter{
		App: guid, Topic: "payments", Reason: "HTTP 500 Internal Server Error", Deliveries: 2, StreamSequence: 9, Data: []byte("p"),
	}, provision.StreamOptions{})
	Expect(err).NotTo(HaveOccurred())
	old, err := ops.Get(ctx, js, ack.Sequence)
	Expect(err).NotTo(HaveOccurred())
	var m mapping.Mapping
	Eventually(func() error { m, err = ops.AppMapping(ctx, js, guid); return err }, 10*time.Second).Should(Succeed())
	out, err := ops.Redrive(ctx, js, m, []ops.Letter{old}, provision.StreamOptions{}, time.Millisecond)
	Expect(err).NotTo(HaveOccurred())
	Expect(out.Pending).To(Equal(1))

	// A sidecar that takes the event and dies, twice; the next pull makes the
	// server give up on it.
	c, err := js.Consumer(ctx, topic.RedriveStream, topic.RedriveConsumerName(guid))
	Expect(err).NotTo(HaveOccurred())
	for range 2 {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
		Expect(err).NotTo(HaveOccurred())
		n := 0
		for range batch.Messages() {
			n++
		}
		Expect(n).To(Equal(1))
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(2500*time.Millisecond))
	Expect(err).NotTo(HaveOccurred())
	for range batch.Messages() {
		t.Fatal("delivered beyond max-deliver")
	}

	var letters []ops.Letter
	Eventually(func() []ops.Letter {
		letters, err = ops.List(ctx, js, ops.Filter{})
		Expect(err).NotTo(HaveOccurred())
		return letters
	}, 10*time.Second).Should(HaveLen(1))
	l := letters[0]
	Expect(l.ID).NotTo(Equal(old.ID), "the old letter is gone, a new one holds the history")
	Expect(l.App).To(Equal(guid))
	Expect(l.StreamSequence).To(Equal(uint64(9)))
	Expect(l.Deliveries).To(Equal(uint64(4)))
	Expect(l.Redrives).To(Equal(1))
	Expect(l.PreviousReasons).To(Equal([]string{"HTTP 500 Internal Server Error"}))
	Expect(l.Reason).To(ContainSubstring("max deliveries (2) reached with no sidecar"))
	Eventually(func() uint64 {
		st, err := js.Stream(ctx, topic.RedriveStream)
		Expect(err).NotTo(HaveOccurred())
		return st.CachedInfo().State.Msgs
	}, 5*time.Second).Should(BeZero(), "the event left the per-app stream")
}
