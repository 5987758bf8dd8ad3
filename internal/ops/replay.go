package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// ErrNoArchive says that a topic keeps no replay window.
var ErrNoArchive = errors.New("keeps no replay window")

// ErrOutsideWindow says that a replay asks for more than is kept.
var ErrOutsideWindow = errors.New("is older than what is kept")

// Replayed is what Replay sent.
type Replayed struct {
	Events    int       `json:"events"`
	First     time.Time `json:"first,omitzero"`      // publish time of the first event sent
	Last      time.Time `json:"last,omitzero"`       // and of the last
	KeptSince time.Time `json:"kept_since,omitzero"` // events from then on are kept (zero: all since the topic began)
}

// Replay sends the events of topic t published in [since, until) (until zero:
// up to now) again, to app m.AppGUID alone, over its per-app path. It is
// refused when the topic has no archive, or when since is before the oldest
// event the archive holds and the archive has already dropped some.
func Replay(ctx context.Context, js jetstream.JetStream, m mapping.Mapping, t string, since, until time.Time, so provision.StreamOptions) (Replayed, error) {
	var r Replayed
	if err := topic.Validate(t); err != nil {
		return r, err
	}
	if !slices.Contains(m.Topics, t) {
		return r, fmt.Errorf("the app is not mapped to topic %s", t)
	}
	if !until.IsZero() && !until.After(since) {
		return r, fmt.Errorf("--until (%s) must be after --since (%s)", until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	name := provision.ArchiveStreamName(t)
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return r, fmt.Errorf("topic %s %w (stream %s is missing: its stream predates replay, or %s was 0 when it was made; `hottopic migrate-streams` adds one, from then on)", t, ErrNoArchive, name, provision.EnvReplayWindow)
	}
	if err != nil {
		return r, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := awaitArchived(ctx, js, s, t)
	if err != nil {
		return r, err
	}
	st := info.State
	r.KeptSince = st.FirstTime
	// Kept from: where the archive began (if added to an existing stream),
	// or its oldest event once older ones aged out.
	var keptFrom time.Time
	if v := info.Config.Metadata[provision.MetaArchiveFrom]; v != "" {
		keptFrom, _ = time.Parse(time.RFC3339Nano, v)
	}
	switch {
	case st.Msgs > 0 && st.FirstSeq > 1 && st.FirstTime.After(keptFrom):
		keptFrom = st.FirstTime
	case st.Msgs == 0 && st.LastSeq > 0 && st.LastTime.After(keptFrom):
		keptFrom = st.LastTime
	}
	r.KeptSince = keptFrom
	if since.Before(keptFrom) {
		return r, fmt.Errorf("--since %s %w: topic %s keeps %s of events, complete from %s", since.Local().Format(time.RFC3339), ErrOutsideWindow, t, info.Config.MaxAge, keptFrom.Local().Format(time.RFC3339))
	}
	if st.Msgs == 0 {
		return r, nil
	}
	if _, err := provision.EnsureRedriveConsumer(ctx, js, m.AppGUID, m.Settings, so); err != nil {
		return r, err
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since})
	if err != nil {
		return r, fmt.Errorf("reading %s: %w", name, err)
	}
	for left := st.Msgs; left > 0; {
		batch, err := c.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return r, fmt.Errorf("reading %s: %w", name, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			left = md.NumPending
			if !until.IsZero() && !md.Timestamp.Before(until) {
				left = 0
				break
			}
			if _, err := js.PublishMsg(ctx, replayMsg(m.AppGUID, t, name, msg, md)); err != nil {
				return r, fmt.Errorf("%d events replayed, then: %v", r.Events, err)
			}
			if r.Events == 0 {
				r.First = md.Timestamp
			}
			r.Last = md.Timestamp
			r.Events++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return r, fmt.Errorf("reading %s: %w", name, err)
		}
		if n == 0 {
			break
		}
	}
	if r.Events > 0 {
		tellReady(js, m.AppGUID)
	}
	return r, nil
}

// archiveCatchUp bounds how long Replay waits for the archive to copy what
// the topic stream holds; normally milliseconds.
const archiveCatchUp = 10 * time.Second

// awaitArchived waits until archive s has copied every event topic t's
// stream had stored when it was called (its archive consumer holds each
// event until then, so it comes), and returns the archive's info then. An
// archive made before it had a consumer of its own is read as it is.
func awaitArchived(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, t string) (*jetstream.StreamInfo, error) {
	name := s.CachedInfo().Config.Name
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	c, cerr := js.PushConsumer(ctx, topic.StreamName(t), provision.ArchiveConsumer)
	ts, serr := js.Stream(ctx, topic.StreamName(t))
	if cerr != nil || serr != nil || len(info.Sources) == 0 {
		return info, nil
	}
	last := ts.CachedInfo().State.LastSeq
	if last < c.CachedInfo().Config.OptStartSeq {
		return info, nil // nothing published since the archive began
	}
	deadline := time.Now().Add(archiveCatchUp)
	for wait := 5 * time.Millisecond; info.Sources[0].Seq < last; wait = min(2*wait, 250*time.Millisecond) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the archive %s of topic %s is still copying (at event %d of %d); try again", name, t, info.Sources[0].Seq, last)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		if info, err = s.Info(ctx); err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		if len(info.Sources) == 0 {
			return info, nil
		}
	}
	return info, nil
}

// replayMsg is an archived event on app appGUID's per-app path: its payload
// and headers, and for a plain event the ce-id and ce-time its first
// delivery had (from its place in the topic stream).
func replayMsg(appGUID, t, archive string, msg jetstream.Msg, md *jetstream.MsgMetadata) *nats.Msg {
	h := nats.Header{}
	var origSeq uint64
	origStream := topic.StreamName(t)
	for k, v := range msg.Headers() {
		if strings.EqualFold(k, "Nats-Stream-Source") && len(v) > 0 {
			if f := strings.Fields(v[0]); len(f) >= 2 {
				origSeq, _ = strconv.ParseUint(f[1], 10, 64)
			}
			continue
		}
		if strings.HasPrefix(strings.ToLower(k), "nats-") && !strings.EqualFold(k, jetstream.MsgIDHeader) {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	id := h.Get(jetstream.MsgIDHeader)
	h.Del(jetstream.MsgIDHeader)
	if id != "" {
		h.Set(provision.HeaderMsgID, id)
	}
	if isPlain(h, msg.Data()) {
		if !hasHeader(h, "ce-id") {
			if id == "" {
				id = origStream + "-" + strconv.FormatUint(origSeq, 10)
			}
			h.Set("ce-id", id)
		}
		if !hasHeader(h, "ce-time") {
			h.Set("ce-time", md.Timestamp.UTC().Format(time.RFC3339Nano))
		}
	}
	h.Set(provision.HeaderReplay, archive)
	h.Set(provision.HeaderStreamSequence, strconv.FormatUint(origSeq, 10))
	return &nats.Msg{Subject: topic.RedriveSubject(appGUID, t), Header: h, Data: msg.Data()}
}

// Migrated is what MigrateStreams did for one topic.
type Migrated struct {
	Topic   string `json:"topic"`
	Stream  string `json:"stream"`
	Archive string `json:"archive"`
	Had     bool   `json:"had"`     // it had an archive already
	Created bool   `json:"created"` // one was made now (never in a dry run)
	// Upgraded: its archive had no consumer of its own on the topic stream
	// (it could miss events acked before it copied them) and got one now;
	// in a dry run, that it would.
	Upgraded bool `json:"upgraded"`
}

// MigrateStreams gives every topic stream without an archive one (dry run:
// only says which), with the window of so.
func MigrateStreams(ctx context.Context, js jetstream.JetStream, so provision.StreamOptions, dryRun bool) ([]Migrated, error) {
	if so.Window() <= 0 {
		return nil, fmt.Errorf("the replay window is off (%s=0): nothing to migrate to", provision.EnvReplayWindow)
	}
	var out []Migrated
	names := map[string]bool{}
	var topics []string
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		names[info.Config.Name] = true
		if t := info.Config.Metadata[provision.MetaTopic]; t != "" && info.Config.Name == topic.StreamName(t) {
			topics = append(topics, t)
		}
	}
	if err := streams.Err(); err != nil {
		return nil, fmt.Errorf("listing streams: %w", err)
	}
	slices.Sort(topics)
	for _, t := range topics {
		mg := Migrated{Topic: t, Stream: topic.StreamName(t), Archive: provision.ArchiveStreamName(t)}
		if names[mg.Archive] {
			mg.Had = true
			if dryRun {
				a, err := js.Stream(ctx, mg.Archive)
				if err != nil {
					return out, fmt.Errorf("look up stream %s: %w", mg.Archive, err)
				}
				src := a.CachedInfo().Config.Sources
				mg.Upgraded = len(src) == 1 && src[0].Consumer == nil
			} else {
				var err error
				if mg.Upgraded, err = provision.UpgradeArchive(ctx, js, t); err != nil {
					return out, err
				}
			}
			out = append(out, mg)
			continue
		}
		if !dryRun {
			created, err := provision.EnsureArchive(ctx, js, t, time.Now(), so)
			if err != nil {
				return out, err
			}
			mg.Created = created
		}
		out = append(out, mg)
	}
	return out, nil
}
