package provision_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestDeadletter(t *testing.T) {
	spec.Run(t, "deadletter", testDeadletter, spec.Report(report.Terminal{}))
}

func testDeadletter(t *testing.T, when spec.G, it spec.S) {
	var Expect = NewWithT(t).Expect

	letter := func() provision.DeadLetter {
		h := nats.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("traceparent", "00-abc-def-01")
		h.Set(jetstream.MsgIDHeader, "order-42")
		h.Set(jetstream.ExpectedLastSeqHeader, "7")
		return provision.DeadLetter{
			App: "app-guid", Topic: "orders.created", Reason: "HTTP 400 Bad Request\r\nmore",
			Deliveries: 3, StreamSequence: 42, Header: h, Data: []byte(`{"id":42}`),
		}
	}

	when("Message", func() {
		it("keeps payload and headers, adds the Hottopic headers, drops NATS control headers", func() {
			m := provision.DeadLetterMsg(letter())
			Expect(m.Subject).To(Equal("hottopic.dlq.orders.created"))
			Expect(string(m.Data)).To(Equal(`{"id":42}`))
			Expect(m.Header.Get("Content-Type")).To(Equal("application/json"))
			Expect(m.Header.Get("traceparent")).To(Equal("00-abc-def-01"))
			Expect(m.Header.Get(provision.HeaderApp)).To(Equal("app-guid"))
			Expect(m.Header.Get(provision.HeaderReason)).To(Equal("HTTP 400 Bad Request  more"))
			Expect(m.Header.Get(provision.HeaderDeliveries)).To(Equal("3"))
			Expect(m.Header.Get(provision.HeaderStreamSequence)).To(Equal("42"))
			Expect(m.Header.Get(provision.HeaderMsgID)).To(Equal("order-42"))
			Expect(m.Header.Get(jetstream.ExpectedLastSeqHeader)).To(BeEmpty())
			Expect(m.Header.Get(jetstream.MsgIDHeader)).To(Equal("dlq:app-guid:" + topic.StreamName("orders.created") + ":42"))
		})

		it("does not change the original headers", func() {
			l := letter()
			provision.DeadLetterMsg(l)
			Expect(l.Header.Get(provision.HeaderApp)).To(BeEmpty())
			Expect(l.Header.Get(jetstream.MsgIDHeader)).To(Equal("order-42"))
		})

		it("bounds the reason and never leaves it empty", func() {
			l := letter()
			l.Reason = strings.Repeat("x", 2000)
			Expect(provision.DeadLetterMsg(l).Header.Get(provision.HeaderReason)).To(HaveLen(512))
			l.Reason = " "
			Expect(provision.DeadLetterMsg(l).Header.Get(provision.HeaderReason)).To(Equal("unknown"))
		})
	})

	when("Publish", func() {
		it("creates the DLQ stream when missing, stores the letter once per event", func() {
			srv := natstest.Run(t)
			js, err := jetstream.New(srv.Connect())
			Expect(err).NotTo(HaveOccurred())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			ack, err := provision.PublishDeadLetter(ctx, js, letter(), provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			Expect(ack.Stream).To(Equal(topic.DLQStream))
			Expect(ack.Duplicate).To(BeFalse())

			again, err := provision.PublishDeadLetter(ctx, js, letter(), provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			Expect(again.Duplicate).To(BeTrue())

			s, err := js.Stream(ctx, topic.DLQStream)
			Expect(err).NotTo(HaveOccurred())
			stored, err := s.GetMsg(ctx, ack.Sequence)
			Expect(err).NotTo(HaveOccurred())
			Expect(stored.Subject).To(Equal("hottopic.dlq.orders.created"))
			Expect(string(stored.Data)).To(Equal(`{"id":42}`))
			Expect(stored.Header.Get(provision.HeaderReason)).To(ContainSubstring("400"))
			info, err := s.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.State.Msgs).To(Equal(uint64(1)))
		})

		it("refuses a letter with an invalid topic", func() {
			srv := natstest.Run(t)
			js, err := jetstream.New(srv.Connect())
			Expect(err).NotTo(HaveOccurred())
			l := letter()
			l.Topic = "orders.*"
			_, err = provision.PublishDeadLetter(context.Background(), js, l, provision.StreamOptions{})
			Expect(err).To(MatchError(ContainSubstring("wildcards")))
		})
	})
}
