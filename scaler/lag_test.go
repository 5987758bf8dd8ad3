package scaler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/mapping"
	"github.com/hottopic-io/hottopic/provision"
	"github.com/hottopic-io/hottopic/topic"
)

func TestLagReader(t *testing.T) {
	spec.Run(t, "LagReader", testLagReader, spec.Report(report.Terminal{}))
}

func testLagReader(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect = NewWithT(t).Expect
		ctx    = context.Background()
		js     jetstream.JetStream
		r      *lagReader
		watch  map[string]bool
	)
	const n = 260 // more than one 256-stream page

	it.Before(func() {
		var err error
		js, err = jetstream.New(natstest.Run(t).Connect())
		Expect(err).NotTo(HaveOccurred())
		watch = map[string]bool{}
		errs := make(chan error, n)
		sem := make(chan struct{}, 16)
		for i := range n {
			tp := fmt.Sprintf("t%d", i)
			watch[topic.StreamName(tp)] = true
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				_, err := provision.EnsureTopicStream(ctx, js, tp, provision.StreamOptions{})
				if err == nil {
					_, err = provision.EnsureConsumer(ctx, js, fmt.Sprintf("app%d", i), tp, mapping.Defaults())
				}
				errs <- err
			}()
		}
		for range n {
			Expect(<-errs).NotTo(HaveOccurred())
		}
		r = newLagReader(newJSAPI(js))
	})

	cycle := func() (lags, int64) {
		before := r.api.requests.Load()
		l, err := r.read(ctx, watch)
		Expect(err).NotTo(HaveOccurred())
		return l, r.api.requests.Load() - before
	}

	it("costs one request per stream page when idle, plus one per stream that changed or has lag", func() {
		l, reqs := cycle()
		Expect(reqs).To(BeEquivalentTo(2), "260 streams = 2 pages, no consumer lists for empty streams")
		lag, known, missing := l.consumerLag(topic.StreamName("t7"), "app7")
		Expect(known).To(BeTrue())
		Expect(missing).To(BeFalse())
		Expect(lag).To(BeZero())
		_, reqs = cycle()
		Expect(reqs).To(BeEquivalentTo(2))

		// Only streams that changed or still have lag get their consumers read.
		for i := range 3 {
			for range 5 {
				_, err := js.Publish(ctx, fmt.Sprintf("t%d", i), []byte("x"))
				Expect(err).NotTo(HaveOccurred())
			}
		}
		l, reqs = cycle()
		Expect(reqs).To(BeEquivalentTo(2 + 3))
		lag, known, _ = l.consumerLag(topic.StreamName("t1"), "app1")
		Expect(known).To(BeTrue())
		Expect(lag).To(BeEquivalentTo(5))

		// Still pending: looked at again.
		_, reqs = cycle()
		Expect(reqs).To(BeEquivalentTo(2 + 3))

		// Two apps work through their events: in flight counts as lag.
		for i := range 2 {
			c, err := js.Consumer(ctx, topic.StreamName(fmt.Sprintf("t%d", i)), fmt.Sprintf("app%d", i))
			Expect(err).NotTo(HaveOccurred())
			b, err := c.Fetch(5, jetstream.FetchMaxWait(time.Second))
			Expect(err).NotTo(HaveOccurred())
			var msgs []jetstream.Msg
			for m := range b.Messages() {
				msgs = append(msgs, m)
			}
			l, _ = cycle()
			lag, _, _ = l.consumerLag(topic.StreamName(fmt.Sprintf("t%d", i)), fmt.Sprintf("app%d", i))
			Expect(lag).To(BeEquivalentTo(5), "pending 0 + ack pending 5")
			for _, m := range msgs {
				Expect(m.DoubleAck(ctx)).To(Succeed())
			}
		}
		l, reqs = cycle()
		Expect(reqs).To(BeEquivalentTo(2+1), "two streams are empty again; one still has lag")
		lag, known, _ = l.consumerLag(topic.StreamName("t0"), "app0")
		Expect(known).To(BeTrue())
		Expect(lag).To(BeZero())

		// A missing stream or consumer is unknown, and flagged as missing.
		_, err := js.Publish(ctx, "t5", []byte("x"))
		Expect(err).NotTo(HaveOccurred())
		watch[topic.StreamName("nope")] = true
		l, _ = cycle()
		_, known, missing = l.consumerLag(topic.StreamName("nope"), "app1")
		Expect(known).To(BeFalse())
		Expect(missing).To(BeTrue())
		_, known, missing = l.consumerLag(topic.StreamName("t5"), "someone-else")
		Expect(known).To(BeFalse())
		Expect(missing).To(BeTrue())
	})
}
