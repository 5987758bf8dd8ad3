package ops

// The per-app operations as a user asks for them (by app, with the app's
// name in every message): the CLI runs them against NATS, the scaler's API
// runs the same against the app's bus, so both say the same.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// LetterMissing says that an app has no dead letter with that ID (on that
// topic). It is an ErrNoLetter.
type LetterMissing struct {
	App   string // the app's name
	ID    uint64
	Topic string
	Then  string // what follows, e.g. ": nothing redriven"
}

func (e *LetterMissing) Error() string {
	return fmt.Sprintf("app '%s' has no dead letter %d%s%s", e.App, e.ID, TopicNote(e.Topic), e.Then)
}

func (e *LetterMissing) Unwrap() error { return ErrNoLetter }

// TopicNote is " on topic T", or nothing without a topic.
func TopicNote(t string) string {
	if t == "" {
		return ""
	}
	return " on topic " + t
}

// GetOf reads dead letter id of app appGUID (named name): another app's
// letter is missing as much as one that does not exist.
func GetOf(ctx context.Context, js jetstream.JetStream, appGUID, name string, id uint64) (Letter, error) {
	l, err := Get(ctx, js, id)
	if errors.Is(err, ErrNoLetter) || err == nil && l.App != appGUID {
		return Letter{}, &LetterMissing{App: name, ID: id}
	}
	return l, err
}

// SelectRedrive reads app appGUID's mapping and the dead letters a redrive
// sends: those of topic t (all when empty), only ids when given (each must be
// there), oldest first, at most limit (0: all).
func SelectRedrive(ctx context.Context, js jetstream.JetStream, appGUID, name, t string, ids []uint64, limit int) (mapping.Mapping, []Letter, error) {
	m, err := AppMapping(ctx, js, appGUID)
	if errors.Is(err, ErrNotMapped) {
		return m, nil, fmt.Errorf("app '%s' %w: map it again before redriving (its dead letters stay)", name, ErrNotMapped)
	}
	if err != nil {
		return m, nil, err
	}
	letters, err := List(ctx, js, Filter{App: appGUID, Topic: t, IDs: ids})
	if err != nil {
		return m, nil, err
	}
	for _, id := range ids {
		if !slices.ContainsFunc(letters, func(l Letter) bool { return l.ID == id }) {
			return m, nil, &LetterMissing{App: name, ID: id, Topic: t, Then: ": nothing redriven"}
		}
	}
	slices.Reverse(letters) // oldest first
	if limit > 0 && len(letters) > limit {
		letters = letters[:limit]
	}
	return m, letters, nil
}

// ReplayTo replays topic t's window [since, until) to app appGUID (named
// name) alone; see Replay.
func ReplayTo(ctx context.Context, js jetstream.JetStream, appGUID, name, t string, since, until time.Time, so provision.StreamOptions) (Replayed, error) {
	m, err := AppMapping(ctx, js, appGUID)
	if errors.Is(err, ErrNotMapped) {
		return Replayed{}, fmt.Errorf("app '%s' %w: nothing to replay to", name, ErrNotMapped)
	}
	if err != nil {
		return Replayed{}, err
	}
	r, err := Replay(ctx, js, m, t, since, until, so)
	if err != nil {
		return r, fmt.Errorf("replay to app '%s': %w", name, err)
	}
	return r, nil
}

// Queued counts the events on app appGUID's per-app path for topic t
// (redriven or replayed, not yet taken by the app).
func Queued(ctx context.Context, js jetstream.JetStream, appGUID, t string) (uint64, error) {
	st, err := js.Stream(ctx, topic.RedriveStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // nothing was ever redriven
	}
	if err != nil {
		return 0, err
	}
	subj := topic.RedriveSubject(appGUID, t)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[subj], nil
}
