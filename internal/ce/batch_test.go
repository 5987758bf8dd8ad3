package ce_test

import (
	"encoding/json"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/ce"
)

func TestBatchItems(t *testing.T) {
	Expect := NewWithT(t).Expect
	tp := ce.NewTopic("orders.created")

	// A batch of a plain JSON message, a binary text event with an encoded
	// value, and a structured event, read back by the SDK element by element.
	jsonH := nats.Header{"Content-Type": {"application/json"}, "Nats-Msg-Id": {"order 1"}, "traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	binH := nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"b1"}, "ce-source": {"/src"}, "ce-type": {"t"}, "ce-color": {"caf%C3%A9"}, "ce-datacontenttype": {"text/plain"}}
	structured := []byte(`{"specversion":"1.0","id":"s1","source":"/s","type":"t","count":3,"data":{"a":[1,2]}}`)
	var buf, scratch []byte
	var ids []string
	buf = append(buf, '[')
	for i, m := range []struct {
		h    nats.Header
		data []byte
	}{{jsonH, []byte(`{"n": 1}`)}, {binH, []byte("hello\x00")}, {nil, structured}, {nil, []byte("raw")}} {
		if i > 0 {
			buf = append(buf, ',')
		}
		var id string
		var err error
		buf, scratch, id, err = tp.AppendBatchItem(buf, scratch, m.h, m.data, origin)
		Expect(err).NotTo(HaveOccurred())
		ids = append(ids, id)
	}
	buf = append(buf, ']')
	Expect(ids).To(Equal([]string{"order 1", "b1", "s1", "HT_orders_created-7"}))

	var raw []json.RawMessage
	Expect(json.Unmarshal(buf, &raw)).To(Succeed(), string(buf))
	events := make([]event.Event, len(raw))
	for i, r := range raw {
		Expect(json.Unmarshal(r, &events[i])).To(Succeed(), string(r))
		Expect(events[i].Validate()).To(Succeed())
	}
	Expect(events[0].ID()).To(Equal("order 1"))
	Expect(events[0].Source()).To(Equal("hottopic:orders.created"))
	Expect(events[0].Type()).To(Equal("hottopic.event"))
	Expect(events[0].Subject()).To(Equal("orders.created"))
	Expect(events[0].Time()).To(Equal(origin.Time))
	Expect(events[0].DataContentType()).To(Equal("application/json"))
	Expect(string(events[0].Data())).To(Equal(`{"n": 1}`))
	Expect(string(raw[0])).To(ContainSubstring(`"data":{"n": 1}`))
	Expect(events[0].Extensions()["traceparent"]).To(Equal("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))

	Expect(events[1].ID()).To(Equal("b1"))
	Expect(events[1].Extensions()["color"]).To(Equal("café"))
	Expect(events[1].DataContentType()).To(Equal("text/plain"))
	Expect(events[1].Data()).To(Equal([]byte("hello\x00")))
	Expect(string(raw[1])).To(ContainSubstring(`"data_base64"`))

	Expect(string(raw[2])).To(Equal(string(structured)))
	Expect(events[3].DataContentType()).To(Equal("application/octet-stream"))
	Expect(events[3].Data()).To(Equal([]byte("raw")))

	// An invalid event is refused as AppendHTTP refuses it.
	_, _, _, err := tp.AppendBatchItem(nil, nil, nats.Header{"ce-time": {"yesterday"}}, nil, origin)
	Expect(err).To(MatchError(ContainSubstring(`ce-time: "yesterday" is not an RFC 3339 timestamp`)))
}

func TestBatchFailures(t *testing.T) {
	Expect := NewWithT(t).Expect
	for body, want := range map[string][]string{
		``: nil, `  `: nil, `null`: nil, `{}`: nil, `{"batchItemFailures":[]}`: {},
		`{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b"}]}`: {"a", "b"},
	} {
		ids, err := ce.BatchFailures([]byte(body))
		Expect(err).NotTo(HaveOccurred(), body)
		Expect(ids).To(Equal(want), body)
	}
	for body, want := range map[string]string{
		`OK`:                         "the batch response is not a JSON object with batchItemFailures",
		`[1]`:                        "the batch response is not a JSON object with batchItemFailures",
		`{"batchItemFailures":"a"}`:  "the batch response is not a JSON object with batchItemFailures",
		`{} {}`:                      "data after its JSON object",
		`{"batchItemFailures":[{}]}`: `batchItemFailures[0] must be an object with a non-empty string itemIdentifier, got "{}"`,
		`{"batchItemFailures":[{"itemIdentifier":7}]}`: "batchItemFailures[0] must be an object",
	} {
		_, err := ce.BatchFailures([]byte(body))
		Expect(err).To(MatchError(ContainSubstring(want)), body)
	}
}
