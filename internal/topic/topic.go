// Package topic validates Hot Topic topic names and derives the JetStream names
// (streams, consumers, dead-letter subjects) that belong to them. Every part of
// Hot Topic derives these names here, so they agree by construction.
package topic

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"
)

const (
	// MaxLength is the longest topic accepted, in bytes.
	MaxLength = 200
	// MaxTokens is the most `.`-separated tokens a topic may have.
	MaxTokens = 16

	// DLQStream stores every dead letter, whatever its topic.
	DLQStream = "HOTTOPIC_DLQ"
	// DLQPrefix starts the subject of every dead letter: hottopic.dlq.<topic>.
	DLQPrefix = "hottopic.dlq."

	streamPrefix = "HT_"
	hashLen      = 12
)

// Error names the rule a topic breaks.
type Error struct {
	Topic string
	Rule  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid topic %q: %s", e.Topic, e.Rule)
}

// Validate reports whether t is a usable topic: a literal NATS subject of 1–16
// tokens of [A-Za-z0-9_-], at most 200 characters, outside the reserved spaces.
func Validate(t string) error {
	bad := func(rule string) error { return &Error{Topic: t, Rule: rule} }
	switch {
	case t == "":
		return bad("a topic must not be empty")
	case len(t) > MaxLength:
		return bad(fmt.Sprintf("a topic is at most %d characters", MaxLength))
	case strings.HasPrefix(t, "$"):
		return bad("topics starting with '$' are reserved for NATS")
	case t == "_INBOX" || strings.HasPrefix(t, "_INBOX."):
		return bad("topics starting with '_INBOX' are reserved for NATS")
	case t == "hottopic" || strings.HasPrefix(t, "hottopic."):
		return bad("topics starting with 'hottopic.' are reserved for Hot Topic")
	}
	tokens := strings.Split(t, ".")
	if len(tokens) > MaxTokens {
		return bad(fmt.Sprintf("a topic has at most %d '.'-separated tokens", MaxTokens))
	}
	for _, tok := range tokens {
		if tok == "" {
			return bad("tokens between '.' must not be empty")
		}
		for i, c := range tok {
			if c < utf8.RuneSelf && tokenByte(byte(c)) {
				continue
			}
			switch {
			case c == '*' || c == '>':
				return bad("wildcards ('*', '>') are not allowed; a topic is one literal subject")
			case c == utf8.RuneError && !utf8.ValidString(tok[i:min(i+utf8.UTFMax, len(tok))]):
				return bad(fmt.Sprintf("byte 0x%02X is not valid UTF-8; tokens are made of A-Z a-z 0-9 _ -", tok[i]))
			}
			return bad(fmt.Sprintf("character %q is not allowed; tokens are made of A-Z a-z 0-9 _ -", c))
		}
	}
	return nil
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// ParseList splits a comma-separated topic list, trims blanks, drops
// duplicates (keeping the first order) and validates every entry.
func ParseList(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if err := Validate(part); err != nil {
			return nil, err
		}
		if !seen[part] {
			seen[part] = true
			out = append(out, part)
		}
	}
	return out, nil
}

// StreamName is the JetStream stream that stores topic t. It is readable
// ("orders.created" → "HT_orders_created") and collision-free: a topic that
// itself contains '_' would be ambiguous once '.' becomes '_', so such topics get
// "__" and a hash suffix, which the plain form (no empty tokens) can never contain.
func StreamName(t string) string {
	readable := strings.ReplaceAll(t, ".", "_")
	if !strings.Contains(t, "_") {
		return streamPrefix + readable
	}
	sum := sha256.Sum256([]byte(t))
	return streamPrefix + readable + "__" + hex.EncodeToString(sum[:])[:hashLen]
}

// ConsumerName is the durable consumer of app appGUID on a topic's stream. One
// stream holds one topic, so the app GUID alone is unique per (app, topic).
func ConsumerName(appGUID string) string {
	return appGUID
}

// ValidConsumerName reports whether name can name a durable consumer.
func ValidConsumerName(name string) error {
	if name == "" {
		return fmt.Errorf("an app GUID is needed to name its consumer")
	}
	if len(name) > 200 || strings.ContainsAny(name, " \t\r\n\f.*>/\\") {
		return fmt.Errorf("app GUID %q cannot name a JetStream consumer (no spaces, '.', '*', '>', slashes; at most 200 characters)", name)
	}
	return nil
}

// DLQSubject is the subject dead letters of topic t are published to.
func DLQSubject(t string) string { return DLQPrefix + t }
