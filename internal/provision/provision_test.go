package provision_test

import (
	"context"
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

func TestProvision(t *testing.T) {
	spec.Run(t, "provision", testProvision, spec.Report(report.Terminal{}))
}

func testProvision(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect = NewWithT(t).Expect
		ctx    = context.Background()
		js     jetstream.JetStream
	)

	it.Before(func() {
		s := natstest.Run(t)
		var err error
		js, err = jetstream.New(s.Connect())
		Expect(err).NotTo(HaveOccurred())
	})

	it("creates a topic stream with interest retention, file storage and a 7-day age", func() {
		s, err := provision.EnsureTopicStream(ctx, js, "orders.created", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		info, err := s.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Config.Name).To(Equal("HT_orders_created"))
		Expect(info.Config.Subjects).To(Equal([]string{"orders.created"}))
		Expect(info.Config.Retention).To(Equal(jetstream.InterestPolicy))
		Expect(info.Config.Storage).To(Equal(jetstream.FileStorage))
		Expect(info.Config.MaxAge).To(Equal(7 * 24 * time.Hour))
		Expect(info.Config.Replicas).To(Equal(1))
	})

	it("maps an app: the new stream takes its topic once the consumer runs; one left opening is opened", func() {
		c, err := provision.EnsureMapping(ctx, js, "app-1", "fn", "orders.paid", mapping.Defaults(), provision.StreamOptions{Duplicates: 10 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		Expect(c.CachedInfo().Config.FilterSubject).To(Equal("orders.paid"))
		s, err := js.Stream(ctx, "HT_orders_paid")
		Expect(err).NotTo(HaveOccurred())
		Expect(s.CachedInfo().Config.Subjects).To(Equal([]string{"orders.paid"}))
		Expect(s.CachedInfo().Config.Duplicates).To(Equal(10 * time.Second))
		_, err = js.Publish(ctx, "orders.paid", []byte("x"))
		Expect(err).NotTo(HaveOccurred())
		b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		Expect(err).NotTo(HaveOccurred())
		n := 0
		for range b.Messages() {
			n++
		}
		Expect(n).To(Equal(1), "the event reached the app's consumer")

		// A mapping interrupted before its stream took the topic: whoever
		// ensures the stream next opens it.
		for _, ensure := range []func(t string) error{
			func(t string) error {
				_, err := provision.EnsureTopicStream(ctx, js, t, provision.StreamOptions{})
				return err
			},
			func(t string) error {
				_, err := provision.EnsureMapping(ctx, js, "app-1", "fn", t, mapping.Defaults(), provision.StreamOptions{})
				return err
			},
		} {
			cfg := provision.TopicStreamConfig("left", provision.StreamOptions{}, nil)
			cfg.Subjects = []string{"hottopic.opening.HT_left"}
			_, err := js.CreateStream(ctx, cfg)
			Expect(err).NotTo(HaveOccurred())
			_, err = js.Publish(ctx, "left", []byte("x"))
			Expect(err).To(MatchError(jetstream.ErrNoStreamResponse), "an opening stream takes no event")
			Expect(ensure("left")).To(Succeed())
			s, err := js.Stream(ctx, "HT_left")
			Expect(err).NotTo(HaveOccurred())
			Expect(s.CachedInfo().Config.Subjects).To(Equal([]string{"left"}))
			Expect(js.DeleteStream(ctx, "HT_left")).To(Succeed())
		}
	})

	it("never reconfigures a stream an operator tuned", func() {
		_, err := provision.EnsureTopicStream(ctx, js, "orders", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		cfg := provision.TopicStreamConfig("orders", provision.StreamOptions{}, nil)
		cfg.MaxAge = time.Hour
		_, err = js.UpdateStream(ctx, cfg)
		Expect(err).NotTo(HaveOccurred())

		s, err := provision.EnsureTopicStream(ctx, js, "orders", provision.StreamOptions{MaxAge: 48 * time.Hour})
		Expect(err).NotTo(HaveOccurred())
		info, err := s.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Config.MaxAge).To(Equal(time.Hour))
	})

	it("refuses a bad topic before touching JetStream", func() {
		_, err := provision.EnsureTopicStream(ctx, js, "orders.>", provision.StreamOptions{})
		Expect(err).To(MatchError(ContainSubstring("wildcards")))
		names := js.StreamNames(ctx)
		for range names.Name() {
			t.Fatal("no stream expected")
		}
	})

	it("creates the dead-letter stream for every hottopic.dlq subject", func() {
		s, err := provision.EnsureDLQStream(ctx, js, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		info, err := s.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Config.Name).To(Equal("HOTTOPIC_DLQ"))
		Expect(info.Config.Subjects).To(Equal([]string{"hottopic.dlq.>"}))
		Expect(info.Config.Retention).To(Equal(jetstream.LimitsPolicy))
	})

	it("makes the app's durable consumer from its settings and updates it in place", func() {
		_, err := provision.EnsureTopicStream(ctx, js, "orders", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		s := mapping.Defaults()
		c, err := provision.EnsureConsumer(ctx, js, "app-guid-1", "orders-app", "orders", s)
		Expect(err).NotTo(HaveOccurred())
		info, err := c.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Config.Durable).To(Equal("app-guid-1"))
		Expect(info.Config.AckPolicy).To(Equal(jetstream.AckExplicitPolicy))
		Expect(info.Config.MaxDeliver).To(Equal(5))
		Expect(info.Config.AckWait).To(Equal(60 * time.Second))
		Expect(info.Config.Metadata).To(HaveKeyWithValue(provision.MetaApp, "app-guid-1"))
		Expect(info.Config.Metadata).To(HaveKeyWithValue(provision.MetaAppName, "orders-app"))
		Expect(info.Config.Description).To(Equal("Hot Topic app orders-app (app-guid-1) on orders"))
		Expect(info.Config.Metadata).To(HaveKeyWithValue(provision.MetaTopic, "orders"))

		s.MaxDeliver, s.TimeoutSeconds = 2, 5
		c, err = provision.EnsureConsumer(ctx, js, "app-guid-1", "orders-app", "orders", s)
		Expect(err).NotTo(HaveOccurred())
		info, err = c.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Config.MaxDeliver).To(Equal(2))
		Expect(info.Config.AckWait).To(Equal(5 * time.Second))
	})

	it("lets every instance hold its whole window at once (concurrency × batch-size × max-instances)", func() {
		_, err := provision.EnsureTopicStream(ctx, js, "readings", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		s := mapping.Defaults()
		s.Concurrency, s.BatchSize, s.MaxInstances = 1, 1000, 2
		_, err = provision.EnsureConsumer(ctx, js, "app-guid-2", "sensors", "readings", s)
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i < 2000; i++ {
			_, err := js.PublishAsync("readings", []byte("r"))
			Expect(err).NotTo(HaveOccurred())
			if i%200 == 199 {
				<-js.PublishAsyncComplete()
			}
		}
		<-js.PublishAsyncComplete()

		// Two instances, each asking for its window and acking nothing yet:
		// both are served in full.
		for instance := range 2 {
			c, err := js.Consumer(ctx, "HT_readings", "app-guid-2")
			Expect(err).NotTo(HaveOccurred())
			got := 0
			for got < 1000 {
				batch, err := c.FetchNoWait(1000 - got)
				Expect(err).NotTo(HaveOccurred())
				n := 0
				for range batch.Messages() {
					n++
				}
				Expect(batch.Error()).NotTo(HaveOccurred())
				Expect(n).NotTo(BeZero(), "instance %d got %d of its 1000 events, then none", instance, got)
				got += n
			}
		}
		c, err := js.Consumer(ctx, "HT_readings", "app-guid-2")
		Expect(err).NotTo(HaveOccurred())
		Expect(c.CachedInfo().Config.MaxAckPending).To(Equal(2000))
		Expect(c.CachedInfo().NumAckPending).To(Equal(2000))
	})

	it("reads operator overrides from the environment and names bad ones", func() {
		o, err := provision.StreamOptionsFromEnv(func(k string) string {
			return map[string]string{provision.EnvReplicas: "3", provision.EnvMaxAge: "24h"}[k]
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(o).To(Equal(provision.StreamOptions{Replicas: 3, MaxAge: 24 * time.Hour}))
		_, err = provision.StreamOptionsFromEnv(func(k string) string { return map[string]string{provision.EnvReplicas: "7"}[k] })
		Expect(err).To(MatchError(ContainSubstring("HOTTOPIC_STREAM_REPLICAS")))
		_, err = provision.StreamOptionsFromEnv(func(k string) string { return map[string]string{provision.EnvMaxAge: "week"}[k] })
		Expect(err).To(MatchError(ContainSubstring("HOTTOPIC_STREAM_MAX_AGE")))
	})
}
