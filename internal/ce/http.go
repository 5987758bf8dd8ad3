package ce

import (
	"bytes"
	"iter"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Origin is where a message was stored; Hot Topic's own attributes for a
// plain message come from it.
type Origin struct {
	Stream string    // the topic's stream
	Seq    uint64    // stream sequence
	Time   time.Time // when JetStream stored it
}

// Topic maps the messages of one topic to HTTP requests. It is safe for
// concurrent use.
type Topic struct {
	name   string
	static []byte // the attributes of a plain message with no header of its own

	okSource, okSchema, okType atomic.Pointer[string] // last values that passed
}

// NewTopic prepares the mapping for a (valid) topic name.
func NewTopic(name string) *Topic {
	return &Topic{name: name, static: appendDefaults(nil, name, 0)}
}

// Name is the topic.
func (t *Topic) Name() string { return t.name }

// Attributes a message sets itself, one bit each.
const (
	ownSpecVersion = 1 << iota
	ownID
	ownSource
	ownType
	ownSubject
	ownTime
	ownContentType
)

func attrBit(name string) int {
	switch name {
	case attrSpecVersion:
		return ownSpecVersion
	case attrID:
		return ownID
	case attrSource:
		return ownSource
	case attrType:
		return ownType
	case attrSubject:
		return ownSubject
	case attrTime:
		return ownTime
	case attrDataContentType:
		return ownContentType
	case attrDataSchema:
		return 1 << 10
	}
	return 0
}

// appendDefaults appends Hot Topic's attributes that do not change per
// event, less those the message sets (own). Topics are validated tokens, so
// they need no encoding.
func appendDefaults(dst []byte, topic string, own int) []byte {
	if own&ownSpecVersion == 0 {
		dst = append(dst, "Ce-Specversion: 1.0\r\n"...)
	}
	if own&ownSource == 0 {
		dst = append(dst, "Ce-Source: hottopic:"...)
		dst = append(dst, topic...)
		dst = append(dst, "\r\n"...)
	}
	if own&ownType == 0 {
		dst = append(dst, "Ce-Type: hottopic.event\r\n"...)
	}
	if own&ownSubject == 0 {
		dst = append(dst, "Ce-Subject: "...)
		dst = append(dst, topic...)
		dst = append(dst, "\r\n"...)
	}
	if own&ownContentType == 0 {
		dst = append(dst, "Content-Type: application/octet-stream\r\n"...)
	}
	return dst
}

// check is checkValue, remembering the last good source, dataschema and
// datacontenttype: their checks allocate, and one producer repeats them.
func (t *Topic) check(name, v string) string {
	var c *atomic.Pointer[string]
	switch name {
	case attrSource:
		c = &t.okSource
	case attrDataSchema:
		c = &t.okSchema
	case attrDataContentType:
		c = &t.okType
	default:
		return checkValue(name, v)
	}
	if p := c.Load(); p != nil && *p == v {
		return ""
	}
	if p := checkValue(name, v); p != "" {
		return p
	}
	ok := v // only a value that passed goes to the heap
	c.Store(&ok)
	return ""
}

// isCE says whether a header name has the ce- prefix (any case).
func isCE(k string) bool {
	return len(k) > 3 && (k[0] == 'c' || k[0] == 'C') && (k[1] == 'e' || k[1] == 'E') && k[2] == '-'
}

func isTrace(k string) bool {
	return strings.EqualFold(k, "traceparent") || strings.EqualFold(k, "tracestate")
}

func isContentType(k string) bool { return len(k) == 12 && strings.EqualFold(k, "content-type") }

// lower returns k in lower case, allocating only when it has upper case.
func lower(k string) string {
	for i := 0; i < len(k); i++ {
		if c := k[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}

// printable says whether v is printable ASCII (a header value that needs no encoding).
func printable(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func appendLine(dst []byte, k, v string) []byte {
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	dst = append(dst, v...)
	return append(dst, "\r\n"...)
}

// AppendHTTP appends to dst the HTTP request header lines ("Key: value\r\n")
// of the event message (h, data) carries, in the CloudEvents HTTP binding.
// The request body is data, unchanged, in every mode:
//
//   - structured (see the package doc): Content-Type as the message has it,
//     else application/cloudevents+json; no ce- header. The JSON event is
//     validated.
//   - binary (a ce-specversion header): one ce-<name> header per attribute
//     and extension the message has, and only those, datacontenttype as
//     Content-Type (or the message's Content-Type);
//   - plain: the message's own ce- headers and Content-Type, and Hot Topic's
//     attributes for the rest: specversion 1.0, id (Nats-Msg-Id, else
//     <stream>-<seq>), source hottopic:<topic>, type hottopic.event, subject
//     <topic>, time (when stored), Content-Type application/octet-stream.
//
// Values are percent-decoded from the NATS binding, checked, and
// percent-encoded for HTTP. traceparent and tracestate are passed through.
// The error is an *InvalidError: the event can never be delivered.
func (t *Topic) AppendHTTP(dst []byte, h nats.Header, data []byte, o Origin) ([]byte, error) {
	var own, binary bool
	var ctKey string
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		switch {
		case isCE(k):
			own = true
			if strings.EqualFold(k[3:], attrSpecVersion) {
				binary = true
			}
		case isContentType(k):
			if ctKey != "" {
				return dst, invalid("Content-Type is given twice")
			}
			own, ctKey = true, k
		case isTrace(k):
			own = true
		}
	}
	if !own { // the fast path: a plain message, or a structured one without Content-Type
		if sniffStructured(data) {
			return appendStructured(dst, h, data, StructuredContentType)
		}
		dst = append(dst, t.static...)
		dst = appendDefaultID(dst, h, o)
		return appendTime(dst, o), nil
	}
	if ctKey != "" {
		if vs := h[ctKey]; len(vs) > 1 {
			return dst, invalid("Content-Type has %d values", len(vs))
		}
		ct := strings.TrimSpace(h[ctKey][0])
		if s, p := structuredType(ct); s {
			if p != "" {
				return dst, invalid("%s", p)
			}
			return appendStructured(dst, h, data, ct)
		}
	}

	seen := 0
	var ct, dct string
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		switch {
		case isCE(k):
			if len(vs) > 1 {
				return dst, invalid("header %s has %d values", k, len(vs))
			}
			name := lower(k[3:])
			v, err := Decode(vs[0])
			if err != nil {
				return dst, invalid("ce-%s: %v", name, err)
			}
			if p := t.check(name, v); p != "" {
				return dst, invalid("ce-%s: %s", name, p)
			}
			if b := attrBit(name); b != 0 {
				if seen&b != 0 {
					return dst, invalid("ce-%s is given twice", name)
				}
				seen |= b
			} else if name != k[3:] && twice(h, k) {
				// Two keys that differ only in case: at least one has upper case.
				return dst, invalid("ce-%s is given twice", name)
			}
			if name == attrDataContentType {
				dct = v // HTTP binding: datacontenttype is Content-Type, never a ce- header
				continue
			}
			dst = append(dst, "ce-"...)
			dst = append(dst, name...)
			dst = append(dst, ": "...)
			dst = appendEncoded(dst, v)
			dst = append(dst, "\r\n"...)
		case isContentType(k):
			ct = strings.TrimSpace(vs[0])
			if p := t.check(attrDataContentType, ct); p != "" {
				return dst, invalid("Content-Type: %s", p)
			}
		case isTrace(k):
			if v := vs[0]; printable(v) {
				dst = appendLine(dst, lower(k), v)
			}
		}
	}
	switch {
	case dct != "" && ct != "" && dct != ct:
		return dst, invalid("ce-datacontenttype %s and Content-Type %s disagree", quote(dct), quote(ct))
	case dct == "":
		dct = ct
	}
	if dct != "" {
		if !printable(dct) {
			return dst, invalid("datacontenttype %s is not printable ASCII", quote(dct))
		}
		dst = appendLine(dst, "Content-Type", dct)
		seen |= ownContentType
	}
	if binary {
		for _, req := range []struct {
			bit  int
			name string
		}{{ownID, attrID}, {ownSource, attrSource}, {ownType, attrType}} {
			if seen&req.bit == 0 {
				return dst, invalid("binary event (ce-specversion given) without ce-%s", req.name)
			}
		}
		return dst, nil
	}
	if seen == 0 {
		dst = append(dst, t.static...)
	} else {
		dst = appendDefaults(dst, t.name, seen)
	}
	if seen&ownID == 0 {
		dst = appendDefaultID(dst, h, o)
	}
	if seen&ownTime == 0 {
		dst = appendTime(dst, o)
	}
	return dst, nil
}

// twice says whether h has another key that is k in another case.
func twice(h nats.Header, k string) bool {
	for k2, vs := range h {
		if len(vs) > 0 && k2 != k && strings.EqualFold(k2, k) {
			return true
		}
	}
	return false
}

// appendDefaultID appends Hot Topic's id: the publisher's Nats-Msg-Id, else <stream>-<seq>.
func appendDefaultID(dst []byte, h nats.Header, o Origin) []byte {
	if id := strings.TrimSpace(h.Get(nats.MsgIdHdr)); id != "" {
		dst = append(dst, "Ce-Id: "...)
		dst = appendEncoded(dst, id)
		return append(dst, "\r\n"...)
	}
	dst = append(dst, "Ce-Id: "...)
	dst = append(dst, o.Stream...)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, o.Seq, 10)
	return append(dst, "\r\n"...)
}

func appendTime(dst []byte, o Origin) []byte {
	dst = append(dst, "Ce-Time: "...)
	dst = o.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, "\r\n"...)
}

// appendStructured delivers a structured event as it is, after checking it.
func appendStructured(dst []byte, h nats.Header, data []byte, ct string) ([]byte, error) {
	if err := checkStructured(data); err != nil {
		return dst, err
	}
	if !printable(ct) {
		return dst, invalid("Content-Type %s is not printable ASCII", quote(ct))
	}
	dst = appendLine(dst, "Content-Type", ct)
	for k, vs := range h {
		if len(vs) > 0 && isTrace(k) && printable(vs[0]) {
			dst = appendLine(dst, lower(k), vs[0])
		}
	}
	return dst, nil
}

// Lines yields the header lines AppendHTTP wrote as (key, value), for an
// HTTP client that takes headers one by one (net/http: req.Header.Add).
func Lines(block []byte) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for len(block) > 0 {
			line := block
			if i := bytes.Index(block, crlf); i >= 0 {
				line, block = block[:i], block[i+2:]
			} else {
				block = nil
			}
			k, v, ok := bytes.Cut(line, colonSpace)
			if !ok {
				continue
			}
			if !yield(string(k), string(v)) {
				return
			}
		}
	}
}

var crlf, colonSpace = []byte("\r\n"), []byte(": ")
