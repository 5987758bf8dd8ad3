package ops

import (
	"context"
	"encoding/json"
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

// ErrNotMapped says that an app has no event mapping (in the KV bucket the
// scaler keeps, or in static mode none at all).
var ErrNotMapped = errors.New("has no event mapping")

// AppMapping reads app appGUID's mapping as its sidecars see it.
func AppMapping(ctx context.Context, js jetstream.JetStream, appGUID string) (mapping.Mapping, error) {
	kv, err := js.KeyValue(ctx, mapping.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return mapping.Mapping{}, fmt.Errorf("app %s %w", appGUID, ErrNotMapped)
	}
	if err != nil {
		return mapping.Mapping{}, fmt.Errorf("mapping bucket %s: %w", mapping.Bucket, err)
	}
	e, err := kv.Get(ctx, appGUID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return mapping.Mapping{}, fmt.Errorf("app %s %w", appGUID, ErrNotMapped)
	}
	if err != nil {
		return mapping.Mapping{}, fmt.Errorf("mapping of app %s: %w", appGUID, err)
	}
	m, err := mapping.Decode(e.Value())
	if err != nil {
		return mapping.Mapping{}, fmt.Errorf("mapping of app %s: %w", appGUID, err)
	}
	m.AppGUID = appGUID
	return m, nil
}

// Failure is one event that could not be sent, or failed again.
type Failure struct {
	ID     uint64 `json:"id"`
	Reason string `json:"reason"`
}

// Outcome counts what a redrive did: Redriven events the app took (2xx),
// Failed ones (not sent, or dead-lettered again: a new letter with the
// history), Pending ones sent but not settled before the wait ended (they
// stay queued for the app alone; their letters stay until it takes them).
type Outcome struct {
	Redriven int       `json:"redriven"`
	Failed   int       `json:"failed"`
	Pending  int       `json:"pending"`
	Failures []Failure `json:"failures"`
}

// Redrive sends letters (all app m.AppGUID's) back to that app alone, oldest
// first, and waits up to wait for the app to settle them.
func Redrive(ctx context.Context, js jetstream.JetStream, m mapping.Mapping, letters []Letter, so provision.StreamOptions, wait time.Duration) (Outcome, error) {
	out := Outcome{Failures: []Failure{}}
	notes := make(chan *nats.Msg, 1024)
	sub, err := js.Conn().ChanSubscribe(topic.SettledSubject(m.AppGUID), notes)
	if err != nil {
		return out, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := js.Conn().Flush(); err != nil {
		return out, err
	}
	fail := func(id uint64, reason string) {
		out.Failed++
		out.Failures = append(out.Failures, Failure{ID: id, Reason: reason})
	}
	ordered := slices.Clone(letters)
	slices.SortFunc(ordered, func(a, b Letter) int { return int64Cmp(a.ID, b.ID) })
	var ready error // the app's per-app consumer, made at the first letter
	made := false
	sent := map[uint64]bool{}
	for _, l := range ordered {
		if l.App != m.AppGUID {
			fail(l.ID, "dead letter of another app ("+l.App+")")
			continue
		}
		if !slices.Contains(m.Topics, l.Topic) {
			fail(l.ID, "the app is no longer mapped to topic "+l.Topic)
			continue
		}
		if !made {
			_, ready = provision.EnsureRedriveConsumer(ctx, js, m.AppGUID, m.Settings, so)
			made = true
		}
		if ready != nil {
			fail(l.ID, ready.Error())
			continue
		}
		ack, err := js.PublishMsg(ctx, redriveMsg(m.AppGUID, l))
		switch {
		case err != nil:
			fail(l.ID, "sending it to the app: "+err.Error())
		case ack.Duplicate:
			fail(l.ID, "already being redriven to the app")
		default:
			sent[l.ID] = true
		}
	}
	if len(sent) > 0 {
		tellReady(js, m.AppGUID)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(sent) > 0 {
		select {
		case <-ctx.Done():
			out.Pending = len(sent)
			return out, ctx.Err()
		case <-timer.C:
			out.Pending = len(sent)
			return out, nil
		case n := <-notes:
			id, _ := strconv.ParseUint(n.Header.Get(provision.HeaderDeadLetter), 10, 64)
			if !sent[id] {
				continue
			}
			delete(sent, id)
			if r := n.Header.Get(provision.HeaderReason); r != "" {
				fail(id, "failed again, dead-lettered anew: "+r)
			} else {
				out.Redriven++
			}
		}
	}
	return out, nil
}

func int64Cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// redriveMsg is dead letter l on the per-app path of app appGUID: its payload
// and headers (the history included), the letter it came from, and for a
// plain event its original ce-id, which a delivery from another stream would
// otherwise change.
func redriveMsg(appGUID string, l Letter) *nats.Msg {
	h := nats.Header{}
	for k, v := range l.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	h.Set(provision.HeaderDeadLetter, strconv.FormatUint(l.ID, 10))
	h.Set(provision.HeaderDeadLetterID, l.Header.Get(jetstream.MsgIDHeader))
	h.Set(provision.HeaderRedrives, strconv.Itoa(l.Redrives+1))
	if isPlain(h, l.Data) && !hasHeader(h, "ce-id") {
		id := h.Get(provision.HeaderMsgID)
		if id == "" {
			id = topic.StreamName(l.Topic) + "-" + strconv.FormatUint(l.StreamSequence, 10)
		}
		h.Set("ce-id", id)
	}
	h.Set(jetstream.MsgIDHeader, "redrive:"+appGUID+":"+strconv.FormatUint(l.ID, 10))
	return &nats.Msg{Subject: topic.RedriveSubject(appGUID, l.Topic), Header: h, Data: l.Data}
}

func hasHeader(h nats.Header, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// isPlain says whether a stored message is no CloudEvent of its own (docs/design.md,
// "Events"): no ce-specversion header, no structured Content-Type, and not a
// JSON object with a top-level specversion sent without any header.
func isPlain(h nats.Header, data []byte) bool {
	if hasHeader(h, "ce-specversion") {
		return false
	}
	ct := ""
	anyCE := false
	for k, v := range h {
		if strings.EqualFold(k, "content-type") && len(v) > 0 {
			ct = v[0]
		}
		anyCE = anyCE || strings.HasPrefix(strings.ToLower(k), "ce-")
	}
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/cloudevents") {
		return false
	}
	if ct == "" && !anyCE {
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) == nil {
			if _, ok := obj["specversion"]; ok {
				return false
			}
		}
	}
	return true
}

// tellReady tells the app's running sidecars that its per-app consumers exist.
func tellReady(js jetstream.JetStream, appGUID string) {
	_ = js.Conn().Publish(topic.RedriveReadySubject(appGUID), nil)
	_ = js.Conn().Flush()
}
