package scaler_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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

// startRedriveScaler runs a leading scaler on a CC double's space.
func startRedriveScaler(t *testing.T) (jetstream.JetStream, *ccdouble.CC, string) {
	g := NewWithT(t)
	ctx := context.Background()
	js, err := jetstream.New(natstest.Run(t).Connect())
	g.Expect(err).NotTo(HaveOccurred())
	cc := ccdouble.New(t)
	space := cc.AddSpace(cc.AddOrg("acme"), "prod")
	cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(space))
	p, err := cfplatform.New(cfplatform.Config{API: cc.URL(), ClientID: "hottopic-scaler", ClientSecret: "s3cret", CacheTTL: 300 * time.Millisecond})
	g.Expect(err).NotTo(HaveOccurred())
	s := scaler.New(js, p, scaler.WithPollInterval(50*time.Millisecond), scaler.WithDiscoveryInterval(150*time.Millisecond),
		scaler.WithLeaderTTL(time.Second), scaler.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(sctx) }()
	t.Cleanup(func() { cancel(); <-done })
	g.Eventually(s.Leader, 10*time.Second).Should(BeTrue())
	g.Eventually(func() error { _, err := js.Stream(ctx, "HOTTOPIC_ADVISORIES"); return err }, 10*time.Second).Should(Succeed())
	return js, cc, space
}

// Unmapping a topic removes what waits for the app on it on the per-app
// path; unmapping the app removes its per-app consumer and all of it. A
// settlement deletes only the announcing app's own dead letter.
func TestUnmapRemovesPerAppPath(t *testing.T) {
	g := NewWithT(t)
	Expect, Eventually := g.Expect, g.Eventually
	ctx := context.Background()
	js, cc, space := startRedriveScaler(t)
	worker := cc.AddApp(space, "worker", map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "payments,refunds"})
	other := cc.AddApp(space, "other", map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "payments"})
	letters := map[string]ops.Letter{}
	for _, l := range []provision.DeadLetter{
		{App: worker, Topic: "payments", StreamSequence: 1}, {App: worker, Topic: "refunds", StreamSequence: 1}, {App: other, Topic: "payments", StreamSequence: 1},
	} {
		l.Reason, l.Deliveries, l.Data = "HTTP 400 Bad Request", 1, []byte("x")
		ack, err := provision.PublishDeadLetter(ctx, js, l, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		letters[l.App+"/"+l.Topic], err = ops.Get(ctx, js, ack.Sequence)
		Expect(err).NotTo(HaveOccurred())
	}
	for _, app := range []string{worker, other} {
		var m mapping.Mapping
		Eventually(func() error { var err error; m, err = ops.AppMapping(ctx, js, app); return err }, 10*time.Second).Should(Succeed())
		var mine []ops.Letter
		for _, l := range letters {
			if l.App == app {
				mine = append(mine, l)
			}
		}
		out, err := ops.Redrive(ctx, js, m, mine, provision.StreamOptions{}, time.Millisecond)
		Expect(err).NotTo(HaveOccurred())
		Expect(out.Pending).To(Equal(len(mine)))
	}
	waiting := func() map[string]uint64 {
		st, err := js.Stream(ctx, topic.RedriveStream)
		Expect(err).NotTo(HaveOccurred())
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(topic.RedrivePrefix+">"))
		Expect(err).NotTo(HaveOccurred())
		return info.State.Subjects
	}
	Expect(waiting()).To(HaveLen(3))

	// A settlement on worker's subject naming other's letter deletes nothing;
	// naming worker's own, that one.
	theirs, mine := letters[other+"/payments"], letters[worker+"/refunds"]
	for _, l := range []ops.Letter{theirs, mine} {
		note := &nats.Msg{Subject: topic.SettledSubject(worker), Header: nats.Header{}}
		note.Header.Set(provision.HeaderDeadLetter, strconv.FormatUint(l.ID, 10))
		note.Header.Set(provision.HeaderDeadLetterID, l.Header.Get(jetstream.MsgIDHeader))
		Eventually(func() error { _, err := js.PublishMsg(ctx, note); return err }, 10*time.Second).Should(Succeed(), "the scaler made HOTTOPIC_SETTLED")
	}
	Eventually(func() error { _, err := ops.Get(ctx, js, mine.ID); return err }, 10*time.Second).Should(MatchError(ops.ErrNoLetter))
	_, err := ops.Get(ctx, js, theirs.ID)
	Expect(err).NotTo(HaveOccurred(), "another app's letter stays")

	cc.SetAnnotations(worker, map[string]string{mapping.AnnTopics: "payments"})
	Eventually(waiting, 10*time.Second).Should(Equal(map[string]uint64{
		topic.RedriveSubject(worker, "payments"): 1, topic.RedriveSubject(other, "payments"): 1,
	}), "worker's events on refunds went with the topic")
	_, err = js.Consumer(ctx, topic.RedriveStream, topic.RedriveConsumerName(worker))
	Expect(err).NotTo(HaveOccurred(), "worker is still mapped")

	cc.SetLabels(worker, nil)
	Eventually(waiting, 10*time.Second).Should(Equal(map[string]uint64{topic.RedriveSubject(other, "payments"): 1}))
	Eventually(func() error {
		_, err := js.Consumer(ctx, topic.RedriveStream, topic.RedriveConsumerName(worker))
		return err
	}, 10*time.Second).Should(MatchError(jetstream.ErrConsumerNotFound))
	_, err = js.Consumer(ctx, topic.RedriveStream, topic.RedriveConsumerName(other))
	Expect(err).NotTo(HaveOccurred(), "the other app's consumer stays")
	_, err = ops.Get(ctx, js, letters[worker+"/payments"].ID)
	Expect(err).NotTo(HaveOccurred(), "dead letters stay: the record of what failed")
}

// A redriven event whose deliveries run out with no sidecar alive is
// dead-lettered by the scaler with its history, as the sidecar would.
func TestRedriveAdvisory(t *testing.T) {
	g := NewWithT(t)
	Expect, Eventually := g.Expect, g.Eventually
	ctx := context.Background()
	js, cc, space := startRedriveScaler(t)
	guid := cc.AddApp(space, "crasher", map[string]string{mapping.LabelMapped: "true"},
		map[string]string{mapping.AnnTopics: "payments", mapping.AnnMaxDeliver: "2", mapping.AnnTimeout: "1"})

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
