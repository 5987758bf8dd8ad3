package broker

// This file is the security core of the broker: what a binding's user may do,
// expressed as NATS permissions that the server enforces.

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// InboxPrefix is the only prefix a binding's connection may receive replies
// on: _INBOX_<binding id>. Another binding of the same bus cannot subscribe
// to it, so it cannot read the events pulled by this one.
func InboxPrefix(bindingID string) string { return "_INBOX_" + bindingID }

// kvStream is the stream behind the mapping bucket.
const kvStream = "KV_" + mapping.Bucket

// appPermissions are an app binding's: publish to the bus's declared topics
// and to dead letters; pull from, ack and inspect only the consumers named by
// its app GUID (on the topic streams and on the per-app path alike); read
// (get or watch) only its own mapping key; announce what it settled on the
// per-app path; receive only on its inbox prefix. Nothing else: no stream or
// consumer management, no other app's consumer or key, no subscription to a
// topic, no $SYS.
func appPermissions(b *Bus, appGUID, bindingID string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(topicSubjects(b)...)
	p.Pub.Allow.Add(
		topic.DLQPrefix+">",
		"$JS.API.CONSUMER.MSG.NEXT.*."+appGUID,
		"$JS.API.CONSUMER.INFO.*."+appGUID,
		"$JS.ACK.*."+appGUID+".>",
		"$JS.API.STREAM.INFO."+kvStream,
		// The sidecar looks a stream up by subject before it publishes to a
		// topic that may have none (output topic, publish API, dead letters):
		// the answer names the bus's streams, nothing of their content.
		"$JS.API.STREAM.NAMES",
		"$JS.API.DIRECT.GET."+kvStream+".$KV."+mapping.Bucket+"."+appGUID,
		// A KV watch is an ordered consumer; the server checks that the filter
		// in the subject is the consumer's, so only this key can be watched.
		"$JS.API.CONSUMER.CREATE."+kvStream+".*.$KV."+mapping.Bucket+"."+appGUID,
		"$JS.FC."+kvStream+".>",
		// The per-app path (redrive, replay): the app's one consumer on
		// HOTTOPIC_REDRIVE is named by its GUID, so the grants above (next,
		// ack, info of consumers named G) cover it and no other app's. The
		// sidecar announces what it settled on its own subject; the scaler
		// deletes the dead letters named there (HOTTOPIC_DLQ's messages
		// cannot be granted per app).
		topic.SettledSubject(appGUID),
	)
	p.Sub.Allow.Add(InboxPrefix(bindingID)+".>", topic.RedriveReadySubject(appGUID))
	return p
}

// keyPermissions are a service key's: publish to the bus's declared topics
// and receive the JetStream acknowledgements on its inbox prefix.
func keyPermissions(b *Bus, bindingID string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(topicSubjects(b)...)
	if len(p.Pub.Allow) == 0 {
		// An empty allow list would mean "everything".
		p.Pub.Deny.Add(">")
	}
	p.Sub.Allow.Add(InboxPrefix(bindingID) + ".>")
	return p
}

func topicSubjects(b *Bus) []string {
	return append([]string(nil), b.Topics...)
}

// ValidateTopicPattern accepts a topic (see internal/topic) or a pattern of
// topics: tokens may be '*', the last may be '>', but the first is always a
// literal token, so no pattern reaches the reserved $…, _INBOX… or hottopic.…
// subjects.
func ValidateTopicPattern(p string) error {
	tokens := strings.Split(p, ".")
	if tokens[0] == "*" || tokens[0] == ">" {
		return fmt.Errorf("invalid topic pattern %q: the first token must be literal", p)
	}
	literal := make([]string, len(tokens))
	for i, t := range tokens {
		switch {
		case t == "*":
			literal[i] = "x"
		case t == ">" && i == len(tokens)-1:
			literal[i] = "x"
		default:
			literal[i] = t
		}
	}
	if err := topic.Validate(strings.Join(literal, ".")); err != nil {
		var te *topic.Error
		if e, ok := err.(*topic.Error); ok {
			te = e
			return fmt.Errorf("invalid topic pattern %q: %s", p, te.Rule)
		}
		return err
	}
	return nil
}
