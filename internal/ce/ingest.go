package ce

import (
	"errors"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// Ingest checks the event a publisher hands to Hot Topic (headers h, payload
// data) where it enters, and rewrites h in place into the NATS binding:
//
//   - a structured event (Content-Type application/cloudevents[+json], or
//     no Content-Type and no ce- header and a JSON object with a top-level
//     specversion as payload, which then gets that Content-Type) is
//     validated; ce- headers beside it are refused (they would contradict it);
//   - every ce- header is checked and stored as ce-<lower-case name> with
//     its value percent-encoded;
//   - a binary event (ce-specversion given) must have ce-id, ce-source and
//     ce-type, and its Content-Type is stored as ce-datacontenttype;
//   - a plain event keeps its Content-Type, which must be a media type.
//
// encoded says that values arrived percent-encoded, in the HTTP binding (the
// sidecar's /publish): they are decoded first, and ce-datacontenttype is
// refused (HTTP carries it as Content-Type). Without it (hottopic publish
// --header) values are taken as they are. Other headers are left alone.
// The error is an *InvalidError naming the header and the rule.
func Ingest(h nats.Header, data []byte, encoded bool) error {
	var ceKeys []string
	ctKey := ""
	for k, vs := range h {
		switch {
		case len(vs) == 0:
		case isCE(k):
			ceKeys = append(ceKeys, k)
		case isContentType(k):
			if ctKey != "" {
				return invalid("Content-Type is given twice")
			}
			ctKey = k
		}
	}
	sort.Strings(ceKeys) // the same error for the same input
	ct := ""
	if ctKey != "" {
		if vs := h[ctKey]; len(vs) > 1 {
			return invalid("Content-Type has %d values", len(vs))
		}
		ct = strings.TrimSpace(h[ctKey][0])
		if s, p := structuredType(ct); s {
			if p != "" {
				return invalid("%s", p)
			}
			if len(ceKeys) > 0 {
				return invalid("header %s beside a structured event (Content-Type %s): its attributes belong in the JSON event", ceKeys[0], ct)
			}
			return checkStructured(data)
		}
	}
	if ctKey == "" && len(ceKeys) == 0 {
		if !sniffStructured(data) {
			return nil
		}
		if err := checkStructured(data); err != nil {
			var ie *InvalidError
			if errors.As(err, &ie) {
				return invalid("the payload is a JSON object with a top-level specversion, so a structured event, and %s", ie.Reason)
			}
			return err
		}
		h.Set("Content-Type", StructuredContentType)
		return nil
	}

	attrs := make(map[string]string, len(ceKeys))
	for _, k := range ceKeys {
		vs := h[k]
		if len(vs) > 1 {
			return invalid("header %s has %d values", k, len(vs))
		}
		name := strings.ToLower(k[3:])
		v := vs[0]
		if encoded {
			if name == attrDataContentType {
				return invalid("ce-datacontenttype is not an HTTP header: in the HTTP binding datacontenttype is Content-Type")
			}
			var err error
			if v, err = Decode(v); err != nil {
				return invalid("ce-%s: %v", name, err)
			}
		} else if !utf8.ValidString(v) {
			return invalid("ce-%s: value is not valid UTF-8", name)
		}
		if p := checkValue(name, v); p != "" {
			return invalid("ce-%s: %s", name, p)
		}
		if _, dup := attrs[name]; dup {
			return invalid("ce-%s is given twice", name)
		}
		attrs[name] = v
	}
	if ct != "" {
		if p := checkValue(attrDataContentType, ct); p != "" {
			return invalid("Content-Type: %s", p)
		}
		if d, ok := attrs[attrDataContentType]; ok && d != ct {
			return invalid("ce-datacontenttype %s and Content-Type %s disagree", quote(d), quote(ct))
		}
	}
	if _, binary := attrs[attrSpecVersion]; binary {
		for _, req := range []string{attrID, attrSource, attrType} {
			if _, ok := attrs[req]; !ok {
				return invalid("a binary event (ce-specversion given) needs ce-id, ce-source and ce-type: ce-%s is missing", req)
			}
		}
		if ct != "" {
			delete(h, ctKey)
			attrs[attrDataContentType] = ct
		}
	}
	for _, k := range ceKeys {
		delete(h, k)
	}
	for name, v := range attrs {
		h["ce-"+name] = []string{Encode(v)}
	}
	return nil
}
