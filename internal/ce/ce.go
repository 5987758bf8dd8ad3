// Package ce maps CloudEvents between Hot Topic's two protocol bindings, with
// no I/O of its own, so that any HTTP client or server can use it.
//
// In JetStream an event is stored in the CloudEvents NATS binding:
//
//   - binary mode: a ce-specversion header; every attribute and extension a
//     ce-<name> header whose value is percent-encoded (space, '"', '%' and
//     anything outside printable ASCII), datacontenttype as
//     ce-datacontenttype; the payload is the data;
//   - structured mode: Content-Type application/cloudevents[+json] and the
//     JSON event format as the payload. A message with no Content-Type and
//     no ce- header whose payload is a JSON object with a top-level
//     specversion is structured too (the NATS binding before headers, and the
//     Go SDK's JetStream sender in structured mode, which sends no header);
//   - anything else is a plain message, which Hot Topic makes into an event
//     at delivery: its ce- headers are its attributes and Hot Topic supplies
//     the missing ones.
//
// Apps get events in the CloudEvents HTTP binding (AppendHTTP); publishers'
// events are checked and put into the NATS binding where they enter (Ingest).
package ce

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// InvalidError says an event breaks the CloudEvents spec or a binding: it can
// never be delivered as it is.
type InvalidError struct{ Reason string }

func (e *InvalidError) Error() string { return "invalid CloudEvent: " + e.Reason }

func invalid(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}

// maxExtName is the longest extension name accepted (the spec's SHOULD).
const maxExtName = 20

// Context attribute names of CloudEvents 1.0.
const (
	attrSpecVersion     = "specversion"
	attrID              = "id"
	attrSource          = "source"
	attrType            = "type"
	attrSubject         = "subject"
	attrTime            = "time"
	attrDataContentType = "datacontenttype"
	attrDataSchema      = "dataschema"
)

// quote shortens a value for an error line.
func quote(v string) string {
	if len(v) > 64 {
		v = strings.ToValidUTF8(v[:64], "") + "…"
	}
	return fmt.Sprintf("%q", v)
}

// checkName says what is wrong with an extension attribute name, or "".
func checkName(n string) string {
	if n == "" {
		return "an attribute name is empty"
	}
	if n == "data" || n == "data_base64" {
		return n + " is not an attribute"
	}
	if len(n) > maxExtName {
		return "extension name " + quote(n) + " is longer than 20 characters"
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return "extension name " + quote(n) + " may only have lower-case letters a-z and digits"
		}
	}
	return ""
}

// checkValue says what is wrong with the value of attribute name, or "".
// The name itself is checked by checkName when it is no context attribute.
func checkValue(name, v string) string {
	if !utf8.ValidString(v) {
		return "value is not valid UTF-8"
	}
	for _, r := range v {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return "value " + quote(v) + " has a control character"
		}
	}
	switch name {
	case attrSpecVersion:
		if v != "1.0" {
			return "specversion " + quote(v) + " is not supported (only 1.0)"
		}
	case attrID, attrType, attrSubject:
		if strings.TrimSpace(v) == "" {
			return "must not be empty"
		}
	case attrSource:
		if strings.TrimSpace(v) == "" {
			return "must not be empty"
		}
		if _, err := url.Parse(v); err != nil {
			return quote(v) + " is not a URI-reference"
		}
	case attrDataSchema:
		if u, err := url.Parse(v); err != nil || !u.IsAbs() {
			return quote(v) + " is not an absolute URI"
		}
	case attrTime:
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			return quote(v) + " is not an RFC 3339 timestamp"
		}
	case attrDataContentType:
		if _, _, err := mime.ParseMediaType(v); err != nil {
			return quote(v) + " is not a media type"
		}
	default:
		return checkName(name)
	}
	return ""
}

// needsEncoding says whether a header value must be percent-encoded: space,
// '"', '%' and anything outside printable ASCII (HTTP binding 3.1.3.2, NATS
// binding 3.1.3.2).
func needsEncoding(c byte) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '%' }

// appendEncoded appends v percent-encoded, upper-case hex.
func appendEncoded(dst []byte, v string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		if c := v[i]; needsEncoding(c) {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

// Encode is an attribute value as a header value.
func Encode(v string) string {
	for i := 0; i < len(v); i++ {
		if needsEncoding(v[i]) {
			return string(appendEncoded(make([]byte, 0, len(v)+8), v))
		}
	}
	return v
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Decode is a header value as an attribute value: a double-quoted string is
// unquoted, then one round of percent-decoding is done. A '%' not followed by
// two hex digits is kept as it is: publishers that send values raw (the Go
// SDK's JetStream sender does) still get their '%' through. The result must
// be UTF-8.
func Decode(v string) (string, error) {
	v = strings.Trim(v, " \t")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(v)-1; i++ {
			if v[i] == '\\' && i+1 < len(v)-1 {
				i++
			}
			b.WriteByte(v[i])
		}
		v = b.String()
	}
	if strings.IndexByte(v, '%') >= 0 {
		b := make([]byte, 0, len(v))
		for i := 0; i < len(v); i++ {
			if v[i] == '%' && i+2 < len(v) {
				hi, ok1 := unhex(v[i+1])
				lo, ok2 := unhex(v[i+2])
				if ok1 && ok2 {
					b = append(b, hi<<4|lo)
					i += 2
					continue
				}
			}
			b = append(b, v[i])
		}
		v = string(b)
	}
	if !utf8.ValidString(v) {
		return "", fmt.Errorf("not UTF-8 once percent-decoded")
	}
	return v, nil
}

// Structured-mode content types.
const (
	mediaCE               = "application/cloudevents"
	StructuredContentType = mediaCE + "+json"
)

// structuredType says whether a Content-Type value declares a structured
// event, and what is wrong with it if it is one Hot Topic cannot carry.
func structuredType(ct string) (structured bool, problem string) {
	ct = strings.TrimLeft(ct, " \t")
	if len(ct) < len(mediaCE) || !strings.EqualFold(ct[:len(mediaCE)], mediaCE) {
		return false, ""
	}
	rest := ct[len(mediaCE):]
	end := strings.IndexAny(rest, "; \t")
	if end < 0 {
		end = len(rest)
	}
	switch suffix := strings.ToLower(rest[:end]); {
	case suffix == "" || suffix == "+json":
		return true, ""
	case strings.HasPrefix(suffix, "-batch"):
		return true, "batched events (" + mediaCE + "-batch+json) are not supported: send one event per message"
	case strings.HasPrefix(suffix, "+"):
		return true, "event format " + quote(strings.TrimSpace(ct)) + " is not supported (only " + StructuredContentType + ")"
	default:
		return false, ""
	}
}

var specversionKey = []byte(`"specversion"`)

// sniffStructured says whether a payload with no Content-Type and no ce-
// header is a structured event: a JSON object with a top-level specversion.
func sniffStructured(data []byte) bool {
	d := bytes.TrimLeft(data, " \t\r\n")
	if len(d) == 0 || d[0] != '{' || !bytes.Contains(d, specversionKey) {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(d, &m) != nil {
		return false
	}
	_, ok := m[attrSpecVersion]
	return ok
}

// checkStructured validates a structured event in the JSON event format.
func checkStructured(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return invalid("a structured event must be a JSON object: %v", err)
	}
	for _, req := range []string{attrSpecVersion, attrID, attrSource, attrType} {
		if raw, ok := m[req]; !ok || string(raw) == "null" {
			return invalid("%s is missing (a CloudEvent needs specversion, id, source and type)", req)
		}
	}
	if _, ok := m["data"]; ok {
		if _, ok := m["data_base64"]; ok {
			return invalid("data and data_base64 are both set")
		}
	}
	for k, raw := range m {
		switch k {
		case "data":
			continue
		case "data_base64":
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return invalid("data_base64 must be a string")
			}
			if _, err := base64.StdEncoding.DecodeString(s); err != nil {
				return invalid("data_base64 is not base64: %v", err)
			}
			continue
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			continue
		}
		switch raw[0] {
		case '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return invalid("%s: %v", k, err)
			}
			if p := checkValue(k, s); p != "" {
				return invalid("%s: %s", k, p)
			}
			continue
		case '{', '[':
			if isContextAttr(k) {
				return invalid("%s must be a string", k)
			}
			if p := checkName(k); p != "" {
				return invalid("%s", p)
			}
			return invalid("extension %s must be a string, number or boolean", k)
		case 'n': // null: the attribute is absent
			if p := checkName(k); p != "" && !isContextAttr(k) {
				return invalid("%s", p)
			}
			continue
		default: // number or boolean
			if isContextAttr(k) {
				return invalid("%s must be a string", k)
			}
			if p := checkName(k); p != "" {
				return invalid("%s", p)
			}
		}
	}
	return nil
}

func isContextAttr(n string) bool {
	switch n {
	case attrSpecVersion, attrID, attrSource, attrType, attrSubject, attrTime, attrDataContentType, attrDataSchema:
		return true
	}
	return false
}
