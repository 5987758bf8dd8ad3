// Package provision creates the JetStream objects an event mapping needs: the
// topic's stream, the dead-letter stream, and the app's durable consumer. The
// sidecar (static mode) and the scaler both provision through here, so a
// stream or consumer looks the same whoever made it. It also writes dead
// letters (deadletter.go), the one other thing both of them store.
package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
)

const (
	// DefaultMaxAge bounds how long an unconsumed event is kept.
	DefaultMaxAge = 7 * 24 * time.Hour

	// Consumer metadata keys: the scaler finds a consumer's app and topic here.
	MetaApp = "hottopic.io/app"
	// MetaAppName is the app's name when known, so `nats consumer info`
	// shows which app a consumer belongs to; MetaApp (the GUID) is the key.
	MetaAppName = "hottopic.io/app-name"
	MetaTopic   = "hottopic.io/topic"

	// Environment overrides for new streams (operators; both optional).
	EnvReplicas = "HOTTOPIC_STREAM_REPLICAS"
	EnvMaxAge   = "HOTTOPIC_STREAM_MAX_AGE"
)

// StreamOptions shape newly created streams. Zero values mean: replicas follow
// the cluster's size, MaxAge is DefaultMaxAge.
type StreamOptions struct {
	Replicas int
	MaxAge   time.Duration
	// ReplayWindow is how long new topics keep events for replay
	// (archive.go): 0 means DefaultReplayWindow, negative means none.
	ReplayWindow time.Duration
	// Duplicates is the de-duplication window of new topic streams: how
	// long the server keeps each Nats-Msg-Id (in memory, about 100 bytes
	// each). 0 means the server's default (2 min).
	Duplicates time.Duration
}

// StreamOptionsFromEnv reads HOTTOPIC_STREAM_REPLICAS and HOTTOPIC_STREAM_MAX_AGE.
func StreamOptionsFromEnv(getenv func(string) string) (StreamOptions, error) {
	var o StreamOptions
	if v := strings.TrimSpace(getenv(EnvReplicas)); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5 {
			return o, fmt.Errorf("%s must be a whole number from 1 to 5, got %q", EnvReplicas, v)
		}
		o.Replicas = n
	}
	var err error
	if o.MaxAge, err = cfenv.Duration(getenv, EnvMaxAge, 0); err != nil {
		return o, err
	}
	o.ReplayWindow, err = replayWindowFromEnv(getenv)
	return o, err
}

// DefaultStreamOptions reads the environment of this process.
func DefaultStreamOptions() (StreamOptions, error) { return StreamOptionsFromEnv(os.Getenv) }

// ReplicasFor is the replica count for new streams, consumers' streams and
// KV buckets on the server nc is connected to: as configured, else one per
// server of the cluster up to 3 (the servers the connection knows: the ones
// it was given and the ones the cluster announced), else 1.
func (o StreamOptions) ReplicasFor(nc *nats.Conn) int {
	if o.Replicas > 0 {
		return o.Replicas
	}
	if nc == nil || nc.ConnectedClusterName() == "" {
		return 1
	}
	return max(1, min(3, len(nc.Servers())))
}

func (o StreamOptions) replicas(nc *nats.Conn) int { return o.ReplicasFor(nc) }

func (o StreamOptions) maxAge() time.Duration {
	if o.MaxAge > 0 {
		return o.MaxAge
	}
	return DefaultMaxAge
}

// TopicStreamConfig is the configuration of a new topic stream.
func TopicStreamConfig(t string, o StreamOptions, nc *nats.Conn) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        topic.StreamName(t),
		Description: "Hot Topic topic " + t,
		Subjects:    []string{t},
		Retention:   jetstream.InterestPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.maxAge(),
		Replicas:    o.replicas(nc),
		Discard:     jetstream.DiscardOld,
		Duplicates:  o.Duplicates,
		Metadata:    map[string]string{MetaTopic: t},
	}
}

// EnsureTopicStream returns topic t's stream, creating it if missing. An
// existing stream is never reconfigured (an operator may have tuned it),
// except that one EnsureMapping left opening gets its topic's subject.
func EnsureTopicStream(ctx context.Context, js jetstream.JetStream, t string, o StreamOptions) (jetstream.Stream, error) {
	if err := topic.Validate(t); err != nil {
		return nil, err
	}
	s, err := ensureTopicStreamWithArchive(ctx, js, t, t, o)
	if err != nil {
		return nil, err
	}
	return s, openStream(ctx, js, s, t)
}

// DLQStreamConfig is the configuration of the dead-letter stream: limits
// retention, since nobody acks a dead letter.
func DLQStreamConfig(o StreamOptions, nc *nats.Conn) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        topic.DLQStream,
		Description: "Hot Topic dead letters",
		Subjects:    []string{topic.DLQPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.maxAge(),
		Replicas:    o.replicas(nc),
		Discard:     jetstream.DiscardOld,
	}
}

// EnsureDLQStream creates the dead-letter stream if missing.
func EnsureDLQStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	return ensureStream(ctx, js, DLQStreamConfig(o, js.Conn()))
}

// AdvisoryStream keeps JetStream's max-deliveries advisories (plain NATS
// messages, lost when nobody listens) until the scaler has dead-lettered the
// events they name, so a scaler restart or leader change loses none.
const (
	AdvisoryStream  = "HOTTOPIC_ADVISORIES"
	AdvisorySubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"
)

// AdvisoryStreamConfig is the configuration of the advisory stream: a work
// queue the scaler's one durable consumer drains.
func AdvisoryStreamConfig(o StreamOptions, nc *nats.Conn) jetstream.StreamConfig {
	return scalerQueueConfig(AdvisoryStream, "Hot Topic: max-deliveries advisories awaiting dead-lettering by the scaler", AdvisorySubject, o, nc)
}

// scalerQueueConfig is a work-queue stream of subject that the scaler drains.
func scalerQueueConfig(name, desc, subject string, o StreamOptions, nc *nats.Conn) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: desc,
		Subjects:    []string{subject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.maxAge(),
		Replicas:    o.replicas(nc),
		Discard:     jetstream.DiscardOld,
	}
}

// EnsureAdvisoryStream creates the advisory stream if missing.
func EnsureAdvisoryStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	return ensureStream(ctx, js, AdvisoryStreamConfig(o, js.Conn()))
}

// AdvisoryConsumer is the scaler's durable consumer on the advisory stream
// (shared by all scaler instances; only the leader pulls).
const AdvisoryConsumer = "hottopic-scaler"

// EnsureAdvisoryConsumer creates or updates the scaler's advisory consumer.
func EnsureAdvisoryConsumer(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	return scalerConsumer(ctx, js, AdvisoryStream, AdvisoryConsumer, "Hot Topic scaler: dead-letters events whose deliveries ran out")
}

// scalerConsumer creates or updates the scaler's durable consumer on stream
// (shared by all scaler instances; only the leader pulls).
func scalerConsumer(ctx context.Context, js jetstream.JetStream, stream, name, desc string) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:     name,
		Description: desc,
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     30 * time.Second,
		MaxDeliver:  -1,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on stream %s: %w", name, stream, err)
	}
	return c, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, _, err := createStream(ctx, js, cfg)
	return s, err
}

// createStream creates the stream of cfg if missing; created says whether
// this call made it (not another sidecar or scaler at the same time).
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (s jetstream.Stream, created bool, err error) {
	s, err = js.Stream(ctx, cfg.Name)
	if err == nil {
		return s, false, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, false, fmt.Errorf("look up stream %s: %w", cfg.Name, err)
	}
	s, err = js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.Stream(ctx, cfg.Name) // created concurrently by another sidecar or scaler
		return s, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	return s, true, nil
}

// ConsumerConfig is the durable pull consumer of app appGUID (named appName,
// which may be empty when unknown) on topic t.
// AckWait is the delivery timeout: the sidecar extends it while the app works,
// so it only matters when a sidecar died holding the event. Its start is set
// by EnsureConsumer: a new consumer starts right after the stream's last
// event at creation; an existing one keeps its position.
func ConsumerConfig(appGUID, appName, t string, s mapping.Settings) jetstream.ConsumerConfig {
	name := topic.ConsumerName(appGUID)
	meta := map[string]string{MetaApp: appGUID, MetaTopic: t}
	desc := "Hot Topic app " + appGUID + " on " + t
	if appName != "" {
		meta[MetaAppName] = appName
		desc = "Hot Topic app " + appName + " (" + appGUID + ") on " + t
	}
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   desc,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Duration(s.TimeoutSeconds) * time.Second,
		MaxDeliver:    s.MaxDeliver,
		FilterSubject: t,
		MaxAckPending: MaxAckPending(s),
		Metadata:      meta,
	}
}

// MaxAckPending is what an app's consumer lets its instances hold unacked,
// together: every instance its whole window (concurrency × batch-size) at
// max-instances, and never less than 1000. A fixed 1000 let the first
// instances of an app with big batches take it all and left the others
// scaled out but starved.
func MaxAckPending(s mapping.Settings) int {
	return max(1000, max(1, s.Concurrency)*max(1, s.BatchSize)*max(1, s.MaxInstances))
}

// EnsureConsumer creates or updates app appGUID's consumer on topic t (the
// topic's stream must exist); a renamed app gets its new name in the metadata.
//
// A new consumer starts at an explicit stream sequence, the one after the
// stream's last event when it is created, never with DeliverNew: on a
// cluster, a DeliverNew consumer picks its start when its leader is elected,
// from that node's copy of the stream, and picks it again on every new
// leader until it has delivered something, so a consumer whose leader moved
// before its app ever pulled (an app at zero instances) would skip every
// event published in between. An existing consumer keeps its start, so its
// position is never moved. Before returning, it waits (up to 5 s) until
// every replica of the new consumer runs (see awaitPlaced).
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, appGUID, appName, t string, s mapping.Settings) (jetstream.Consumer, error) {
	if err := topic.ValidConsumerName(appGUID); err != nil {
		return nil, err
	}
	stream, name := topic.StreamName(t), topic.ConsumerName(appGUID)
	wrap := func(err error) error {
		return fmt.Errorf("consumer %s on stream %s: %w", name, stream, err)
	}
	cfg := ConsumerConfig(appGUID, appName, t, s)
	for range 3 {
		c, err := js.Consumer(ctx, stream, name)
		if err == nil {
			have := c.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = have.DeliverPolicy, have.OptStartSeq, have.OptStartTime
			c, err = js.UpdateConsumer(ctx, stream, cfg)
			if err != nil {
				return nil, wrap(err)
			}
			return c, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, wrap(err)
		}
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, wrap(err)
		}
		state := st.CachedInfo().State
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, state.LastSeq+1
		c, err = js.CreateConsumer(ctx, stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			continue // created meanwhile by another scaler or sidecar: update that one
		}
		if err != nil {
			return nil, wrap(err)
		}
		_ = awaitPlaced(ctx, c, st.CachedInfo().Config.Replicas, 5*time.Second)
		return c, nil
	}
	return nil, wrap(errors.New("created and deleted concurrently; try again"))
}

// awaitPlaced waits, up to within, until every replica of the consumer is
// running and current, and says so (false when it is not by then). An
// interest-retention stream's replica keeps an event only if it knows a
// consumer that wants it; a replica that has not created the consumer yet
// drops the event from its copy, and would lose it for the consumer if it
// led the consumer later.
func awaitPlaced(ctx context.Context, c interface {
	Info(context.Context) (*jetstream.ConsumerInfo, error)
}, replicas int, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		info, err := c.Info(ctx)
		if err == nil && placed(info, replicas) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

func placed(info *jetstream.ConsumerInfo, replicas int) bool {
	if info.Cluster == nil || replicas <= 1 {
		return true
	}
	if info.Cluster.Leader == "" || len(info.Cluster.Replicas) < replicas-1 {
		return false
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}
