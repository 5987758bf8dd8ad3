package provision_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestArchive(t *testing.T) {
	Expect := NewWithT(t).Expect
	ctx, js := context.Background(), embeddedJS(t)

	// A new topic stream gets its archive: sourced, limits, the window as its age.
	_, err := provision.EnsureTopicStream(ctx, js, "orders.created", provision.StreamOptions{})
	Expect(err).NotTo(HaveOccurred())
	a, err := js.Stream(ctx, "HTA_orders_created")
	Expect(err).NotTo(HaveOccurred())
	cfg := a.CachedInfo().Config
	Expect(cfg.Retention).To(Equal(jetstream.LimitsPolicy))
	Expect(cfg.MaxAge).To(Equal(24 * time.Hour))
	Expect(cfg.Sources).To(HaveLen(1))
	Expect(cfg.Sources[0].Name).To(Equal("HT_orders_created"))
	Expect(cfg.Sources[0].Consumer).To(Equal(&jetstream.StreamConsumerSource{Name: provision.ArchiveConsumer, DeliverSubject: "hottopic.archive.HTA_orders_created"}),
		"it copies through a durable consumer of its own, which holds every event until copied")
	ac, err := js.PushConsumer(ctx, "HT_orders_created", provision.ArchiveConsumer)
	Expect(err).NotTo(HaveOccurred())
	Expect(ac.CachedInfo().Config.AckPolicy).To(Equal(jetstream.AckFlowControlPolicy))
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

	// An archive made by an older version (a plain source) gets its
	// consumer from UpgradeArchive, once.
	_, err = provision.EnsureTopicStream(ctx, js, "legacy", provision.StreamOptions{ReplayWindow: -1})
	Expect(err).NotTo(HaveOccurred())
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "HTA_legacy", Sources: []*jetstream.StreamSource{{Name: "HT_legacy"}}, MaxAge: time.Hour})
	Expect(err).NotTo(HaveOccurred())
	up, err := provision.UpgradeArchive(ctx, js, "legacy")
	Expect(err).NotTo(HaveOccurred())
	Expect(up).To(BeTrue())
	legacy, err := js.Stream(ctx, "HTA_legacy")
	Expect(err).NotTo(HaveOccurred())
	Expect(legacy.CachedInfo().Config.Sources[0].Consumer).NotTo(BeNil())
	Expect(legacy.CachedInfo().Config.MaxAge).To(Equal(time.Hour), "its window stays")
	up, err = provision.UpgradeArchive(ctx, js, "legacy")
	Expect(err).NotTo(HaveOccurred())
	Expect(up).To(BeFalse())
	_, err = js.Publish(ctx, "legacy", []byte("kept"))
	Expect(err).NotTo(HaveOccurred())
	NewWithT(t).Eventually(func() uint64 {
		info, err := legacy.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		return info.State.Msgs
	}, 10*time.Second).Should(Equal(uint64(1)), "copied with no app consumer at all: the archive's consumer is interest")

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
