package provision_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// The per-app consumer is named by the app GUID and replaces the per-topic
// consumers of earlier versions, keeping what they had not delivered;
// RemoveRedrive takes a topic's events, then the app's consumer and all.
func TestRedriveConsumer(t *testing.T) {
	Expect := NewWithT(t).Expect
	ctx, js := context.Background(), embeddedJS(t)
	const app = "6f1c2a4e-0000-4000-8000-0000000000aa"
	_, err := provision.EnsureRedriveStream(ctx, js, provision.StreamOptions{})
	Expect(err).NotTo(HaveOccurred())
	old := app + "__" + topic.StreamName("orders")
	_, err = js.CreateOrUpdateConsumer(ctx, topic.RedriveStream, jetstream.ConsumerConfig{Durable: old, FilterSubject: topic.RedriveSubject(app, "orders"), AckPolicy: jetstream.AckExplicitPolicy})
	Expect(err).NotTo(HaveOccurred())
	for _, tp := range []string{"orders", "orders", "refunds"} {
		_, err = js.Publish(ctx, topic.RedriveSubject(app, tp), []byte(tp))
		Expect(err).NotTo(HaveOccurred())
	}

	c, err := provision.EnsureRedriveConsumer(ctx, js, app, mapping.Defaults(), provision.StreamOptions{})
	Expect(err).NotTo(HaveOccurred())
	info := c.CachedInfo()
	Expect(info.Name).To(Equal(app))
	Expect(info.Config.FilterSubject).To(Equal("hottopic.redrive." + app + ".>"))
	Expect(info.NumPending).To(Equal(uint64(3)), "what the old consumer had not delivered")
	_, err = js.Consumer(ctx, topic.RedriveStream, old)
	Expect(err).To(MatchError(jetstream.ErrConsumerNotFound))
	_, err = provision.EnsureRedriveConsumer(ctx, js, app, mapping.Defaults(), provision.StreamOptions{})
	Expect(err).NotTo(HaveOccurred(), "again: updated in place")

	Expect(provision.RemoveRedrive(ctx, js, app, "orders")).To(Succeed())
	info, err = c.Info(ctx)
	Expect(err).NotTo(HaveOccurred())
	Expect(info.NumPending).To(Equal(uint64(1)), "refunds' event stays")
	Expect(provision.RemoveRedrive(ctx, js, app, "")).To(Succeed())
	_, err = js.Consumer(ctx, topic.RedriveStream, app)
	Expect(err).To(MatchError(jetstream.ErrConsumerNotFound))
	st, err := js.Stream(ctx, topic.RedriveStream)
	Expect(err).NotTo(HaveOccurred())
	Expect(st.CachedInfo().State.Msgs).To(BeZero())
	Expect(provision.RemoveRedrive(ctx, js, app, "")).To(Succeed(), "nothing left is no error")
}

// embeddedJS is JetStream on an embedded server of the test's own.
func embeddedJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(natstest.Run(t).Connect())
	if err != nil {
		t.Fatal(err)
	}
	return js
}
