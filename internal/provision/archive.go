package provision

// The replay window: every topic stream keeps interest retention (an event
// leaves it once every mapped app acked it, so lag and the scaler's reading
// of it are unchanged) and is sourced into an archive stream with limits
// retention and MaxAge = the replay window. `hottopic replay` reads the
// archive. Storage: each event is kept once more, for the window (24 h by
// default), whether or not it was delivered; the topic stream's copy still
// goes at the last ack. Streams made before the window existed get an archive
// only from `hottopic migrate-streams` (an operator's decision, never silent).
//
// The archive sources through a durable consumer of its own on the topic
// stream (ArchiveConsumer, made before the archive and before any app's
// consumer), acknowledged only by the archive's flow control once it stored
// the event. An interest stream keeps an event while any consumer has not
// acked it, so the archive can never fall behind the apps' acks: an event
// acked by every app before the archive copied it stays until it is copied.
// (A plain source sets up its consumer asynchronously, after the archive is
// made; events acked before that were never archived.)

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/topic"
)

const (
	// DefaultReplayWindow is how long a topic's events stay replayable.
	DefaultReplayWindow = 24 * time.Hour
	// EnvReplayWindow sets the replay window of new topics (Go duration; 0
	// turns it off).
	EnvReplayWindow = "HOTTOPIC_REPLAY_WINDOW"
	// MetaArchive names, on an archive stream, the topic it keeps.
	MetaArchive = "hottopic.io/archive-of"
	// MetaArchiveFrom is, on an archive added to an existing topic stream,
	// the time (RFC 3339) from which it holds every event: events acked
	// before it was made are not in it. An archive made with its stream has
	// none: it holds the topic's events from the start.
	MetaArchiveFrom = "hottopic.io/complete-from"

	// ArchiveConsumer is the archive's durable consumer on its topic stream.
	ArchiveConsumer = "hottopic-archive"
	// archiveDeliverPrefix starts the subject the archive consumer pushes
	// to (the archive's own, by stream name): under hottopic., which no
	// topic and no binding's permission reaches.
	archiveDeliverPrefix = "hottopic.archive."

	archivePrefix = "HTA_"
)

// replayWindowFromEnv reads EnvReplayWindow: 0 when unset (the default),
// negative when "0" (off).
func replayWindowFromEnv(getenv func(string) string) (time.Duration, error) {
	v := strings.TrimSpace(getenv(EnvReplayWindow))
	switch v {
	case "":
		return 0, nil
	case "0", "0s":
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s must be a Go duration such as 24h or 90m (0 turns replay off), got %q", EnvReplayWindow, v)
	}
	return d, nil
}

// Window is the replay window of new topics; 0 when replay is off.
func (o StreamOptions) Window() time.Duration {
	switch {
	case o.ReplayWindow < 0:
		return 0
	case o.ReplayWindow == 0:
		return DefaultReplayWindow
	}
	return o.ReplayWindow
}

// ArchiveStreamName is the archive of topic t: "HTA_" where the topic's
// stream has "HT_", so it never collides with a topic stream.
func ArchiveStreamName(t string) string {
	return archivePrefix + strings.TrimPrefix(topic.StreamName(t), "HT_")
}

// ArchiveStreamConfig is topic t's archive, keeping events for window;
// completeFrom is zero for an archive made with its stream.
func ArchiveStreamConfig(t string, window time.Duration, completeFrom time.Time, o StreamOptions, nc *nats.Conn) jetstream.StreamConfig {
	meta := map[string]string{MetaArchive: t}
	if !completeFrom.IsZero() {
		meta[MetaArchiveFrom] = completeFrom.UTC().Format(time.RFC3339Nano)
	}
	return jetstream.StreamConfig{
		Name:        ArchiveStreamName(t),
		Description: "Hot Topic replay window of topic " + t,
		Sources: []*jetstream.StreamSource{{Name: topic.StreamName(t), Consumer: &jetstream.StreamConsumerSource{
			Name: ArchiveConsumer, DeliverSubject: archiveDeliverSubject(t),
		}}},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		MaxAge:    window,
		Replicas:  o.replicas(nc),
		Discard:   jetstream.DiscardOld,
		Metadata:  meta,
	}
}

func archiveDeliverSubject(t string) string { return archiveDeliverPrefix + ArchiveStreamName(t) }

// ArchiveConsumerConfig is the archive's consumer on topic t's stream: a
// push consumer acked by the archive's flow control (AckFlowControl needs
// flow control, a 1 s heartbeat and no ack wait), starting at startSeq.
func ArchiveConsumerConfig(t string, startSeq uint64) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        ArchiveConsumer,
		Description:    "Hot Topic: copies topic " + t + " into its replay archive " + ArchiveStreamName(t),
		DeliverSubject: archiveDeliverSubject(t),
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(startSeq, 1),
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		IdleHeartbeat:  time.Second,
		MaxAckPending:  10000,
		Metadata:       map[string]string{MetaArchive: t},
	}
}

// ensureArchiveConsumer creates the archive's consumer on topic t's stream
// if missing, starting right after the stream's last event (for a new
// stream: its first).
func ensureArchiveConsumer(ctx context.Context, js jetstream.JetStream, t string) error {
	stream := topic.StreamName(t)
	_, err := js.PushConsumer(ctx, stream, ArchiveConsumer)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("consumer %s on stream %s: %w", ArchiveConsumer, stream, err)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	c, err := js.CreatePushConsumer(ctx, stream, ArchiveConsumerConfig(t, st.CachedInfo().State.LastSeq+1))
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", ArchiveConsumer, stream, err)
	}
	// As for an app's consumer: a replica that does not know it yet would
	// drop events from its copy of the interest stream.
	_ = awaitPlaced(ctx, c, st.CachedInfo().Config.Replicas, 5*time.Second)
	return nil
}

// EnsureArchive creates topic t's archive if o has a replay window and the
// archive is missing. It returns whether it created one. completeFrom is
// zero when the topic's stream was just made, else now.
func EnsureArchive(ctx context.Context, js jetstream.JetStream, t string, completeFrom time.Time, o StreamOptions) (bool, error) {
	w := o.Window()
	if w <= 0 {
		return false, nil
	}
	_, err := js.Stream(ctx, ArchiveStreamName(t))
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, fmt.Errorf("look up stream %s: %w", ArchiveStreamName(t), err)
	}
	if err := ensureArchiveConsumer(ctx, js, t); err != nil {
		return false, err
	}
	_, err = js.CreateStream(ctx, ArchiveStreamConfig(t, w, completeFrom, o, js.Conn()))
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create stream %s: %w", ArchiveStreamName(t), err)
	}
	return true, nil
}

// UpgradeArchive gives topic t's existing archive, if it sources without a
// consumer of its own (made before ArchiveConsumer existed, so it can miss
// events acked before it copied them), that consumer, starting after the
// topic stream's last event. It returns whether it changed the archive.
func UpgradeArchive(ctx context.Context, js jetstream.JetStream, t string) (bool, error) {
	name := ArchiveStreamName(t)
	a, err := js.Stream(ctx, name)
	if err != nil {
		return false, fmt.Errorf("look up stream %s: %w", name, err)
	}
	cfg := a.CachedInfo().Config
	if len(cfg.Sources) != 1 || cfg.Sources[0].Name != topic.StreamName(t) || cfg.Sources[0].Consumer != nil {
		return false, nil
	}
	if err := ensureArchiveConsumer(ctx, js, t); err != nil {
		return false, err
	}
	cfg.Sources = ArchiveStreamConfig(t, cfg.MaxAge, time.Time{}, StreamOptions{}, nil).Sources
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return false, fmt.Errorf("update stream %s: %w", name, err)
	}
	return true, nil
}

// ensureTopicStreamWithArchive creates topic t's stream if missing (on
// subject, t or openingSubject(t)) and, only when it created it, the
// stream's archive. An existing stream keeps what it has: its archive comes
// from MigrateStreams.
func ensureTopicStreamWithArchive(ctx context.Context, js jetstream.JetStream, t, subject string, o StreamOptions) (jetstream.Stream, error) {
	cfg := TopicStreamConfig(t, o, js.Conn())
	cfg.Subjects = []string{subject}
	s, created, err := createStream(ctx, js, cfg)
	if err != nil || !created { // an existing stream's creator made the archive
		return s, err
	}
	if _, err := EnsureArchive(ctx, js, t, time.Time{}, o); err != nil {
		return nil, err
	}
	return s, nil
}
