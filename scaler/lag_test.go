package scaler

import (
	"context"
	"fmt"
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
	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestLagReader(t *testing.T) {
	spec.Run(t, "LagReader", testLagReader, spec.Report(report.Terminal{}))
}

func testLagReader(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		ctx        = context.Background()
		js         jetstream.JetStream
		r          *lagReader
		watch      map[string]string
	)
	const n = 260 // more than one 256-stream page

	it.Before(func() {
		var err error
		js, err = jetstream.New(natstest.Run(t).Connect())
		Expect(err).NotTo(HaveOccurred())
		watch = map[string]string{}
		errs := make(chan error, n)
		sem := make(chan struct{}, 16)
		for i := range n {
			tp := fmt.Sprintf("t%d", i)
			watch[topic.StreamName(tp)] = tp
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				// Without replay archives: the page counts below are of topic
				// streams (an archive per topic doubles the stream list).
				_, err := provision.EnsureTopicStream(ctx, js, tp, provision.StreamOptions{ReplayWindow: -1})
				if err == nil {
					_, err = provision.EnsureConsumer(ctx, js, fmt.Sprintf("app%d", i), "", tp, mapping.Defaults())
				}
				errs <- err
			}()
		}
		for range n {
			Expect(<-errs).NotTo(HaveOccurred())
		}
		r = newLagReader(newJSAPI(js), 0) // every pending stream is due each cycle
		t.Cleanup(r.hints.stop)
	})

	cycle := func(sweep bool) (lags, int64) {
		before := r.api.requests.Load()
		l, err := r.read(ctx, watch, sweep)
		Expect(err).NotTo(HaveOccurred())
		return l, r.api.requests.Load() - before
	}
	hinted := func() int {
		r.hints.mu.Lock()
		defer r.hints.mu.Unlock()
		return len(r.hints.fired)
	}
	publish := func(t string, k int) {
		for range k {
			_, err := js.Publish(ctx, t, []byte("x"))
			Expect(err).NotTo(HaveOccurred())
		}
	}
	// counted waits until the server counts lag events for topic tN's
	// consumer appN: it tells consumers about new messages asynchronously,
	// after the publish is acknowledged.
	counted := func(tp string, lag int) {
		Eventually(func() (int64, error) {
			c, err := js.Consumer(ctx, topic.StreamName(tp), "app"+strings.TrimPrefix(tp, "t"))
			if err != nil {
				return 0, err
			}
			info, err := c.Info(ctx)
			if err != nil {
				return 0, err
			}
			return int64(info.NumPending) + int64(info.NumAckPending), nil
		}, 5*time.Second).Should(BeEquivalentTo(lag))
	}

	it("costs a share of the stream list when idle, plus one request per stream with news or lag", func() {
		l, reqs := cycle(true)
		Expect(reqs).To(BeEquivalentTo(2), "first cycle: the whole list, 260 streams = 2 pages, no consumer lists for empty streams")
		lag, known, missing := l.consumerLag(topic.StreamName("t7"), "app7")
		Expect(known).To(BeTrue())
		Expect(missing).To(BeFalse())
		Expect(lag).To(BeZero())
		_, reqs = cycle(true)
		Expect(reqs).To(BeEquivalentTo(1), "then a tenth of the list per cycle (at least one page)")
		_, reqs = cycle(false)
		Expect(reqs).To(BeZero(), "nothing at all between sweeps")

		// Events on three idle topics: each hints once, however many arrive.
		publish("t0", 50)
		publish("t1", 5)
		publish("t2", 5)
		counted("t0", 50)
		counted("t1", 5)
		counted("t2", 5)
		Eventually(hinted, 5*time.Second).Should(Equal(3))
		l, reqs = cycle(false)
		Expect(reqs).To(BeEquivalentTo(3))
		lag, known, _ = l.consumerLag(topic.StreamName("t1"), "app1")
		Expect(known).To(BeTrue())
		Expect(lag).To(BeEquivalentTo(5))
		lag, _, _ = l.consumerLag(topic.StreamName("t0"), "app0")
		Expect(lag).To(BeEquivalentTo(50))

		// Still pending: looked at again, one request each.
		_, reqs = cycle(false)
		Expect(reqs).To(BeEquivalentTo(3))

		// Two apps work through their events: in flight counts as lag.
		for i := range 2 {
			c, err := js.Consumer(ctx, topic.StreamName(fmt.Sprintf("t%d", i)), fmt.Sprintf("app%d", i))
			Expect(err).NotTo(HaveOccurred())
			b, err := c.Fetch(50, jetstream.FetchMaxWait(time.Second))
			Expect(err).NotTo(HaveOccurred())
			var msgs []jetstream.Msg
			for m := range b.Messages() {
				msgs = append(msgs, m)
			}
			l, _ = cycle(false)
			lag, _, _ = l.consumerLag(topic.StreamName(fmt.Sprintf("t%d", i)), fmt.Sprintf("app%d", i))
			Expect(lag).To(BeEquivalentTo(len(msgs)), "pending 0 + ack pending")
			inFlight, arrived := l.consumerFlow(topic.StreamName(fmt.Sprintf("t%d", i)), fmt.Sprintf("app%d", i))
			Expect(inFlight).To(BeEquivalentTo(len(msgs)), "read from the same list entry")
			Expect(arrived).To(BeEquivalentTo([]int{50, 5}[i]), "delivered up to + pending: every event published")
			for _, m := range msgs {
				Expect(m.DoubleAck(ctx)).To(Succeed())
			}
		}
		l, _ = cycle(false)
		lag, known, _ = l.consumerLag(topic.StreamName("t0"), "app0")
		Expect(known).To(BeTrue())
		Expect(lag).To(BeZero())
		inFlight, arrived := l.consumerFlow(topic.StreamName("t0"), "app0")
		Expect(inFlight).To(BeZero())
		Expect(arrived).To(BeEquivalentTo(50), "all completed: arrived stays")
		_, reqs = cycle(false)
		Expect(reqs).To(BeEquivalentTo(1), "two topics are idle again; one still has lag")

		// A new event on a topic that went idle hints again.
		publish("t1", 1)
		counted("t1", 1)
		Eventually(hinted, 5*time.Second).Should(Equal(1))
		l, _ = cycle(false)
		lag, _, _ = l.consumerLag(topic.StreamName("t1"), "app1")
		Expect(lag).To(BeEquivalentTo(1))

		// A missing stream or consumer is unknown, and flagged as missing.
		publish("t5", 1)
		watch[topic.StreamName("nope")] = "nope"
		Eventually(hinted, 5*time.Second).Should(Equal(1))
		l, _ = cycle(false)
		_, known, missing = l.consumerLag(topic.StreamName("nope"), "app1")
		Expect(known).To(BeFalse())
		Expect(missing).To(BeTrue())
		_, known, missing = l.consumerLag(topic.StreamName("t5"), "someone-else")
		Expect(known).To(BeFalse())
		Expect(missing).To(BeTrue())
	})
}
