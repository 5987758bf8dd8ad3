package provision_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestArchive(t *testing.T) {
	Expect := NewWithT(t).Expect
	ctx := context.Background()
	js, err := jetstream.New(natstest.Run(t).Connect())
	Expect(err).NotTo(HaveOccurred())

	// A new topic stream gets its archive: sourced, limits, the window as its age.
	_, err = provision.EnsureTopicStream(ctx, js, "orders.created", provision.StreamOptions{})
	Expect(err).NotTo(HaveOccurred())
	a, err := js.Stream(ctx, "HTA_orders_created")
	Expect(err).NotTo(HaveOccurred())
	cfg := a.CachedInfo().Config
	Expect(cfg.Retention).To(Equal(jetstream.LimitsPolicy))
	Expect(cfg.MaxAge).To(Equal(24 * time.Hour))
	Expect(cfg.Sources).To(HaveLen(1))
	Expect(cfg.Sources[0].Name).To(Equal("HT_orders_created"))
	Expect(cfg.Subjects).To(BeEmpty())
	Expect(cfg.Metadata).NotTo(HaveKey(provision.MetaArchiveFrom))
	topicStream, err := js.Stream(ctx, "HT_orders_created")
	Expect(err).NotTo(HaveOccurred())
	Expect(topicStream.CachedInfo().Config.Retention).To(Equal(jetstream.InterestPolicy), "the topic stream is unchanged")

	// Off: no archive. An existing stream never gets one on its own.
	_, err = provision.EnsureTopicStream(ctx, js, "quiet", provision.StreamOptions{ReplayWindow: -1})
	Expect(err).NotTo(HaveOccurred())
	_, err = provision.EnsureTopicStream(ctx, js, "quiet", provision.StreamOptions{})
	Expect(err).NotTo(HaveOccurred())
	_, err = js.Stream(ctx, "HTA_quiet")
	Expect(err).To(MatchError(jetstream.ErrStreamNotFound))

	for v, want := range map[string]time.Duration{"": 24 * time.Hour, "0": 0, "90m": 90 * time.Minute} {
		o, err := provision.StreamOptionsFromEnv(func(k string) string {
			if k == provision.EnvReplayWindow {
				return v
			}
			return ""
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(o.Window()).To(Equal(want), v)
	}
	_, err = provision.StreamOptionsFromEnv(func(k string) string {
		if k == provision.EnvReplayWindow {
			return "a day"
		}
		return ""
	})
	Expect(err).To(MatchError(`HOTTOPIC_REPLAY_WINDOW must be a Go duration such as 24h or 90m (0 turns replay off), got "a day"`))
}
