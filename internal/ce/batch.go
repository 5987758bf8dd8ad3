package ce

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"strings"

	"github.com/nats-io/nats.go"
)

// BatchContentType is the HTTP batch mode's media type: a JSON array of
// events in the JSON event format.
const BatchContentType = "application/cloudevents-batch+json"

// AppendBatchItem appends to dst the event message (h, data) carries as one
// element of an HTTP batch: the JSON event format, with exactly the
// attributes a single delivery (AppendHTTP) carries. A structured event is
// appended as it is stored. A binary or plain one is made structured: its
// attributes from the ce- headers AppendHTTP would send (values
// percent-decoded again), datacontenttype from Content-Type, traceparent and
// tracestate as the distributed-tracing extensions, and the payload as data
// when datacontenttype is JSON and the payload is valid JSON, else as
// data_base64 (no data when the payload is empty).
//
// scratch is reused for the header lines; id is the event's id (the
// itemIdentifier an app names in batchItemFailures). The error is an
// *InvalidError, as AppendHTTP's.
func (t *Topic) AppendBatchItem(dst, scratch []byte, h nats.Header, data []byte, o Origin) (out, scratchOut []byte, id string, err error) {
	lines, err := t.AppendHTTP(scratch[:0], h, data, o)
	if err != nil {
		return dst, lines, "", err
	}
	structured := true
	for k := range Lines(lines) {
		if isCE(k) {
			structured = false // binary and plain events always carry ce-specversion
			break
		}
	}
	if structured {
		var ev struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(data, &ev); err != nil { // checked by AppendHTTP: cannot happen
			return dst, lines, "", invalid("a structured event must be a JSON object: %v", err)
		}
		return append(dst, bytes.TrimSpace(data)...), lines, ev.ID, nil
	}

	dst = append(dst, '{')
	first := true
	field := func(k, v string) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendJSONString(dst, v)
	}
	ct := ""
	for k, v := range Lines(lines) {
		switch {
		case isCE(k):
			name := lower(k[3:])
			dv, derr := Decode(v)
			if derr != nil { // AppendHTTP encoded it: cannot happen
				return dst, lines, "", invalid("ce-%s: %v", name, derr)
			}
			if name == attrID {
				id = dv
			}
			field(name, dv)
		case isContentType(k):
			ct = v
			field(attrDataContentType, v)
		case isTrace(k):
			field(lower(k), v)
		}
	}
	if len(data) > 0 {
		dst = append(dst, ',')
		if isJSONType(ct) && json.Valid(data) {
			dst = append(dst, `"data":`...)
			dst = append(dst, bytes.TrimSpace(data)...)
		} else {
			dst = append(dst, `"data_base64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, data)
			dst = append(dst, '"')
		}
	}
	return append(dst, '}'), lines, id, nil
}

// isJSONType says whether a media type is JSON: application/json, text/json
// or any +json suffix.
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// BatchFailures reads an app's answer to a batch: the ids in Lambda's
// {"batchItemFailures":[{"itemIdentifier":"<id>"}]}. An empty body, or a
// JSON object without batchItemFailures, names none. Anything else (not
// JSON, another shape, an identifier that is not a non-empty string) is an
// error naming what is wrong.
func BatchFailures(body []byte) ([]string, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var resp struct {
		Failures *[]json.RawMessage `json:"batchItemFailures"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&resp); err != nil {
		return nil, fmt.Errorf("the batch response is not a JSON object with batchItemFailures: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("the batch response has data after its JSON object")
	}
	if resp.Failures == nil {
		return nil, nil
	}
	ids := make([]string, 0, len(*resp.Failures))
	for i, raw := range *resp.Failures {
		var item struct {
			ID *string `json:"itemIdentifier"`
		}
		if err := json.Unmarshal(raw, &item); err != nil || item.ID == nil || *item.ID == "" {
			return nil, fmt.Errorf("batchItemFailures[%d] must be an object with a non-empty string itemIdentifier, got %s", i, quote(string(raw)))
		}
		ids = append(ids, *item.ID)
	}
	return ids, nil
}
