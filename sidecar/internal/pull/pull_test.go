package pull_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/sidecar/internal/pull"
)

func TestPull(t *testing.T) {
	spec.Run(t, "pull", testPull, spec.Report(report.Terminal{}))
}

func testPull(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		nc, spy    *nats.Conn
		cons       jetstream.Consumer
		requests   atomic.Int64 // explicit pull requests seen on the API subject
		out        chan *pull.Msg
		p          *pull.Puller
		ctx        = context.Background()
	)

	it.Before(func() {
		srv := natstest.Run(t)
		nc = srv.Connect()
		js, err := jetstream.New(nc)
		Expect(err).NotTo(HaveOccurred())
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.x"}})
		Expect(err).NotTo(HaveOccurred())
		cons, err = js.CreateOrUpdateConsumer(ctx, "T", jetstream.ConsumerConfig{
			Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		})
		Expect(err).NotTo(HaveOccurred())
		for i := 1; i <= 10; i++ {
			_, err := js.Publish(ctx, "t.x", []byte(strconv.Itoa(i)))
			Expect(err).NotTo(HaveOccurred())
		}

		spy = srv.Connect()
		_, err = spy.Subscribe("$JS.API.CONSUMER.MSG.NEXT.T.c", func(*nats.Msg) { requests.Add(1) })
		Expect(err).NotTo(HaveOccurred())
		Expect(spy.Flush()).To(Succeed())

		out = make(chan *pull.Msg, 16)
	})

	start := func(window int) {
		var err error
		p, err = pull.Start(nc, pull.Config{Stream: "T", Consumer: "c", Window: window, AckWait: 30 * time.Second}, out, nil)
		Expect(err).NotTo(HaveOccurred())
		t.Cleanup(p.Stop)
	}

	info := func() *jetstream.ConsumerInfo {
		ci, err := cons.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		return ci
	}

	it("holds at most the window, and each AckDone acks and asks for the next event itself", func() {
		start(3)
		Eventually(p.Held).Should(Equal(3))
		Expect(info().NumAckPending).To(Equal(3))
		Expect(len(out)).To(Equal(3))

		var got []string
		for len(got) < 10 {
			var m *pull.Msg
			Eventually(out).Should(Receive(&m))
			got = append(got, string(m.Data))
			Expect(p.Held()).To(BeNumerically("<=", 3))
			Expect(p.AckDone(m)).To(Succeed())
		}
		Expect(got).To(Equal([]string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}))
		Eventually(func() uint64 { return info().AckFloor.Stream }).Should(Equal(uint64(10)))
		ci := info()
		Expect(ci.NumAckPending).To(Equal(0))
		Expect(ci.NumRedelivered).To(Equal(0))
		// Only the first request went to the API subject: every later one
		// rode on an ack (without it, the three first events would be all).
		Expect(requests.Load()).To(Equal(int64(1)))
		Expect(p.Held()).To(Equal(0))
	})

	it("sends acks held back to share a write (no pull request due) within AckDelay", func() {
		start(16) // a window of 3 would ask again with every ack
		Eventually(func() int { return info().NumAckPending }).Should(Equal(10))
		for i := 0; i < 10; i++ {
			var m *pull.Msg
			Eventually(out).Should(Receive(&m))
			Expect(p.AckDone(m)).To(Succeed())
		}
		Eventually(func() uint64 { return info().AckFloor.Stream }).Should(Equal(uint64(10)))
		Expect(info().NumAckPending).To(Equal(0))
	})

	it("never lets a pulled event pass for the reply to a request on the same connection", func() {
		start(16)
		for i := 0; i < 50; i++ { // the events arrive meanwhile
			reply, err := nc.Request("$JS.API.CONSUMER.INFO.T.c", nil, 5*time.Second)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(reply.Data)).To(HavePrefix("{"), "reply on %s", reply.Subject)
		}
		Eventually(p.Held).Should(Equal(10))
	})

	it("Done releases without acking; a small window asks for each freed place at once", func() {
		start(3)
		Eventually(p.Held).Should(Equal(3))
		p.Done(<-out)
		p.Done(<-out)
		Eventually(func() int { return info().NumAckPending }).Should(Equal(5)) // the released stay pending
		Eventually(p.Held).Should(Equal(3))
		Expect(nc.Flush()).To(Succeed())  // every request reached the server,
		Expect(spy.Flush()).To(Succeed()) // and the spy heard all it relayed
		Expect(requests.Load()).To(Equal(int64(3)))
	})
}
