package ce_test

// The mapping is tested against the CloudEvents Go SDK: events its JetStream
// sender writes go through AppendHTTP and are read back by its HTTP
// receiver's code (cehttp.NewMessage + binding.ToEvent + Validate); events
// its HTTP sender writes go through Ingest and are read back by its JetStream
// receiver's code.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	nats_jetstream "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/ce"
)

func TestCE(t *testing.T) {
	spec.Run(t, "ce", testCE, spec.Report(report.Terminal{}))
}

var origin = ce.Origin{Stream: "HT_orders_created", Seq: 7, Time: time.Date(2026, 12, 1, 10, 0, 0, 123000000, time.UTC)}

// sdkEvent is a binary-mode-friendly event with every attribute and extensions.
func sdkEvent() event.Event {
	e := event.New()
	e.SetID("order-1")
	e.SetSource("https://shop.example/orders")
	e.SetType("com.example.order.created")
	e.SetSubject("order/1")
	e.SetTime(time.Date(2026, 11, 30, 8, 1, 2, 345678000, time.UTC))
	e.SetDataSchema("https://shop.example/schemas/order.json")
	e.SetExtension("tenant", "acme")
	e.SetExtension("priority", 3)
	e.SetExtension("urgent", true)
	_ = e.SetData("application/json", map[string]any{"id": 1})
	return e
}

// natsMsg is e as the SDK's JetStream sender publishes it.
func natsMsg(t *testing.T, e event.Event, structured bool) (nats.Header, []byte) {
	t.Helper()
	ctx := binding.WithForceBinary(context.Background())
	if structured {
		ctx = binding.WithForceStructured(context.Background())
	}
	var buf bytes.Buffer
	h, err := nats_jetstream.WriteMsg(ctx, binding.ToMessage(&e), &buf)
	if err != nil {
		t.Fatal(err)
	}
	return h, buf.Bytes()
}

// parseBlock turns "Key: value\r\n" lines into an http.Header, as a server reads them.
func parseBlock(t *testing.T, block []byte) http.Header {
	t.Helper()
	h := http.Header{}
	for _, line := range strings.Split(strings.TrimSuffix(string(block), "\r\n"), "\r\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("bad header line %q in %q", line, block)
		}
		h.Add(k, v)
	}
	// ce.Lines, for clients that add headers one by one, reads the same.
	h2 := http.Header{}
	for k, v := range ce.Lines(block) {
		h2.Add(k, v)
	}
	if !reflect.DeepEqual(h, h2) {
		t.Fatalf("ce.Lines: %v, want %v", h2, h)
	}
	return h
}

// sdkReceive is the Go SDK's HTTP receiver reading a request.
func sdkReceive(h http.Header, body []byte) (*event.Event, error) {
	m := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
	e, err := binding.ToEvent(context.Background(), m)
	if err != nil {
		return nil, err
	}
	return e, e.Validate()
}

// sameEvent compares everything the two events say, extensions by their string form.
func sameEvent(got, want event.Event) {
	Expect(got.SpecVersion()).To(Equal(want.SpecVersion()))
	Expect(got.ID()).To(Equal(want.ID()))
	Expect(got.Source()).To(Equal(want.Source()))
	Expect(got.Type()).To(Equal(want.Type()))
	Expect(got.Subject()).To(Equal(want.Subject()))
	Expect(got.Time().Equal(want.Time())).To(BeTrue(), "time %s, want %s", got.Time(), want.Time())
	Expect(got.DataSchema()).To(Equal(want.DataSchema()))
	Expect(got.DataContentType()).To(Equal(want.DataContentType()))
	Expect(got.Data()).To(Equal(want.Data()))
	str := func(m map[string]any) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			s, err := types.Format(v)
			Expect(err).NotTo(HaveOccurred())
			out[k] = s
		}
		return out
	}
	Expect(str(got.Extensions())).To(Equal(str(want.Extensions())))
}

func reason(err error) string {
	var ie *ce.InvalidError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return "not an InvalidError: " + err.Error()
}

func testCE(t *testing.T, when spec.G, it spec.S) {
	var topic *ce.Topic
	it.Before(func() {
		RegisterTestingT(t)
		topic = ce.NewTopic("orders.created")
	})

	deliver := func(h nats.Header, data []byte) (http.Header, error) {
		block, err := topic.AppendHTTP(nil, h, data, origin)
		if err != nil {
			return nil, err
		}
		return parseBlock(t, block), nil
	}

	when("an SDK JetStream sender published the event", func() {
		it("delivers a binary event with every attribute and extension, datacontenttype as Content-Type", func() {
			want := sdkEvent()
			h, data := natsMsg(t, want, false)
			Expect(h.Get("ce-datacontenttype")).To(Equal("application/json"), "the SDK's NATS binding")
			got, err := deliver(h, data)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Values("Content-Type")).To(Equal([]string{"application/json"}))
			Expect(got.Get("Ce-Datacontenttype")).To(BeEmpty())
			Expect(got.Get("Ce-Subject")).To(Equal("order/1"), "the publisher's, not the topic")
			e, err := sdkReceive(got, data)
			Expect(err).NotTo(HaveOccurred())
			sameEvent(*e, want)
		})

		it("adds nothing to a binary event: no Content-Type, subject or time it did not have", func() {
			want := event.New()
			want.SetID("x")
			want.SetSource("/s")
			want.SetType("t")
			_ = want.SetData("", []byte("raw"))
			want.SetDataContentType("")
			h, data := natsMsg(t, want, false)
			h.Del("ce-datacontenttype")
			got, err := deliver(h, data)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Get("Content-Type")).To(BeEmpty())
			Expect(got.Get("Ce-Subject")).To(BeEmpty())
			Expect(got.Get("Ce-Time")).To(BeEmpty())
			e, err := sdkReceive(got, data)
			Expect(err).NotTo(HaveOccurred())
			Expect(e.ID()).To(Equal("x"))
			Expect(e.Extensions()).To(BeEmpty())
		})

		it("allocates nothing for a binary event once its source, schema and content type were seen", func() {
			h, data := natsMsg(t, sdkEvent(), false)
			buf := make([]byte, 0, 1024)
			n := testing.AllocsPerRun(100, func() {
				buf, _ = topic.AppendHTTP(buf[:0], h, data, origin)
			})
			Expect(n).To(BeZero())
		})

		it("delivers a structured event as it is (the SDK sends it with no header at all)", func() {
			want := sdkEvent()
			h, data := natsMsg(t, want, true)
			Expect(h).To(BeEmpty())
			got, err := deliver(h, data)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Get("Content-Type")).To(Equal("application/cloudevents+json"))
			for k := range got {
				Expect(strings.HasPrefix(strings.ToLower(k), "ce-")).To(BeFalse(), "header %s beside a structured event", k)
			}
			e, err := sdkReceive(got, data)
			Expect(err).NotTo(HaveOccurred())
			sameEvent(*e, want)
			Expect(e.Extensions()["priority"]).To(Equal(int32(3)), "extension types survive")
		})

		it("keeps a structured event's own Content-Type", func() {
			_, data := natsMsg(t, sdkEvent(), true)
			got, err := deliver(nats.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}}, data)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Get("Content-Type")).To(Equal("application/cloudevents+json; charset=utf-8"))
		})

		it("percent-encodes values for HTTP, decoding the NATS ones first", func() {
			want := sdkEvent()
			want.SetID(`order 1 "50%" €`)
			want.SetExtension("note", "naïve")
			h, data := natsMsg(t, want, false) // the SDK sends them raw
			got, err := deliver(h, data)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Get("Ce-Id")).To(Equal("order%201%20%2250%25%22%20%E2%82%AC"))
			Expect(got.Get("Ce-Note")).To(Equal("na%C3%AFve"))
			for k, vs := range got {
				for _, v := range vs {
					for _, c := range []byte(v) {
						Expect(c > ' ' && c < 0x7f || c == ' ' && k == "Content-Type").To(BeTrue(), "%s: %q", k, v)
					}
				}
			}
			e, err := sdkReceive(got, data)
			Expect(err).NotTo(HaveOccurred())
			// The SDK (2.16.2) does not percent-decode as the binding says a receiver must.
			id, err := url.PathUnescape(e.ID())
			Expect(err).NotTo(HaveOccurred())
			Expect(id).To(Equal(want.ID()))

			h.Set("ce-id", "order%201%20%2250%25%22%20%E2%82%AC") // an encoding publisher
			again, err := deliver(h, data)
			Expect(err).NotTo(HaveOccurred())
			Expect(again.Get("Ce-Id")).To(Equal(got.Get("Ce-Id")))
		})
	})

	when("the message is no CloudEvent", func() {
		it("makes one from Hot Topic's attributes", func() {
			got, err := deliver(nil, []byte("hello"))
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Get("Ce-Specversion")).To(Equal("1.0"))
			Expect(got.Get("Ce-Id")).To(Equal("HT_orders_created-7"))
			Expect(got.Get("Ce-Source")).To(Equal("hottopic:orders.created"))
			Expect(got.Get("Ce-Type")).To(Equal("hottopic.event"))
			Expect(got.Get("Ce-Subject")).To(Equal("orders.created"))
			Expect(got.Get("Ce-Time")).To(Equal("2026-12-01T10:00:00.123Z"))
			Expect(got.Get("Content-Type")).To(Equal("application/octet-stream"))
			e, err := sdkReceive(got, []byte("hello"))
			Expect(err).NotTo(HaveOccurred())
			Expect(e.Data()).To(Equal([]byte("hello")))
		})

		it("takes the message's own ce- headers, Content-Type, trace context and a percent-encoded Nats-Msg-Id", func() {
			h := nats.Header{
				"Nats-Msg-Id":  {"a b%c€"},
				"ce-type":      {"com.example.x"},
				"Ce-Tenant":    {"acme"},
				"Content-Type": {"application/json"},
				"traceparent":  {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
				"Other":        {"not passed"},
			}
			got, err := deliver(h, []byte(`{"id":1}`))
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Get("Ce-Id")).To(Equal("a%20b%25c%E2%82%AC"))
			Expect(got.Get("Ce-Type")).To(Equal("com.example.x"))
			Expect(got.Get("Ce-Tenant")).To(Equal("acme"))
			Expect(got.Values("Content-Type")).To(Equal([]string{"application/json"}))
			Expect(got.Get("Traceparent")).To(HavePrefix("00-"))
			Expect(got.Get("Other")).To(BeEmpty())
			Expect(got.Get("Ce-Source")).To(Equal("hottopic:orders.created"))
			_, err = sdkReceive(got, []byte(`{"id":1}`))
			Expect(err).NotTo(HaveOccurred())
		})

		it("allocates nothing on the way, with or without attributes of its own", func() {
			buf, data := make([]byte, 0, 1024), []byte("hello")
			for _, h := range []nats.Header{{}, {"ce-type": {"x"}, "Content-Type": {"application/json"}, "Nats-Msg-Id": {"a b"}}} {
				n := testing.AllocsPerRun(100, func() {
					buf, _ = topic.AppendHTTP(buf[:0], h, data, origin)
				})
				Expect(n).To(BeZero(), "%v", h)
			}
		})

		it("takes a JSON payload that merely mentions specversion as data", func() {
			body := []byte(`{"nested":{"specversion":"1.0"}}`)
			got, err := deliver(nil, body)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Get("Content-Type")).To(Equal("application/octet-stream"))
			Expect(got.Get("Ce-Id")).To(Equal("HT_orders_created-7"))
		})

	})

	when("the event is invalid", func() {
		// Each case breaks one rule; the SDK's receiver must refuse the same
		// event when forwarded as it is (the old behaviour), except where said.
		base := func() http.Header {
			return http.Header{
				"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"},
				"Content-Type": {"text/plain"},
			}
		}
		cases := []struct {
			name, key, value, reason string
			sdkAccepts               bool
		}{
			{"time not RFC 3339", "Ce-Time", "yesterday", `ce-time: "yesterday" is not an RFC 3339 timestamp`, false},
			{"empty id", "Ce-Id", " ", "ce-id: must not be empty", false},
			{"empty type", "Ce-Type", "", "ce-type: must not be empty", false},
			{"source not a URI-reference", "Ce-Source", "http://a b:x/", `ce-source: "http://a b:x/" is not a URI-reference`, false},
			{"relative dataschema", "Ce-Dataschema", "schemas/x", `ce-dataschema: "schemas/x" is not an absolute URI`, false},
			{"empty subject", "Ce-Subject", " ", "ce-subject: must not be empty", true}, // the SDK drops it
			{"unknown specversion", "Ce-Specversion", "2.0", `ce-specversion: specversion "2.0" is not supported (only 1.0)`, false},
			{"extension name with a dash", "Ce-My-Ext", "x", `ce-my-ext: extension name "my-ext" may only have lower-case letters a-z and digits`, false},
			{"extension name too long", "Ce-Abcdefghijklmnopqrstu", "x", `extension name "abcdefghijklmnopqrstu" is longer than 20 characters`, true},
			{"datacontenttype as an HTTP ce- header", "Ce-Datacontenttype", "text/plain", "", false},
		}
		for _, c := range cases {
			it("refuses: "+c.name, func() {
				h := base()
				h[c.key] = []string{c.value}
				_, sdkErr := sdkReceive(h, []byte("x"))
				Expect(sdkErr == nil).To(Equal(c.sdkAccepts), "the SDK's verdict: %v", sdkErr)

				nh := nats.Header{}
				for k, v := range h {
					nh[strings.ToLower(k)] = v
				}
				if c.reason == "" { // only wrong in HTTP, fine in NATS
					_, err := deliver(nh, []byte("x"))
					Expect(err).NotTo(HaveOccurred())
					err = ce.Ingest(nats.Header(h), []byte("x"), true)
					Expect(reason(err)).To(ContainSubstring("ce-datacontenttype is not an HTTP header"))
					return
				}
				_, err := deliver(nh, []byte("x"))
				Expect(err).To(HaveOccurred())
				Expect(reason(err)).To(ContainSubstring(c.reason))
				Expect(err.Error()).NotTo(ContainSubstring("\n"))
				err = ce.Ingest(nats.Header(h), []byte("x"), true)
				Expect(reason(err)).To(ContainSubstring(c.reason))
			})
		}

		it("refuses a binary event without its required attributes", func() {
			_, err := deliver(nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-type": {"t"}}, nil)
			Expect(reason(err)).To(Equal("binary event (ce-specversion given) without ce-source"))
			_, sdkErr := sdkReceive(http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Type": {"t"}}, nil)
			Expect(sdkErr).To(HaveOccurred())
		})

		it("refuses an attribute or Content-Type given twice", func() {
			_, err := deliver(nats.Header{"Content-Type": {"text/plain"}, "content-type": {"application/json"}}, nil)
			Expect(reason(err)).To(Equal("Content-Type is given twice"))
			_, err = deliver(nats.Header{"ce-type": {"a"}, "Ce-Type": {"b"}}, nil)
			Expect(reason(err)).To(Equal("ce-type is given twice"))
			_, err = deliver(nats.Header{"ce-tenant": {"a"}, "CE-TENANT": {"b"}}, nil)
			Expect(reason(err)).To(Equal("ce-tenant is given twice"))
			_, err = deliver(nats.Header{"ce-tenant": {"a"}, "Ce-Other": {"b"}}, nil)
			Expect(err).NotTo(HaveOccurred())
		})

		it("refuses Content-Type and ce-datacontenttype that disagree", func() {
			_, err := deliver(nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"},
				"ce-datacontenttype": {"application/json"}, "Content-Type": {"text/plain"}}, nil)
			Expect(reason(err)).To(Equal(`ce-datacontenttype "application/json" and Content-Type "text/plain" disagree`))
		})

		it("refuses a structured event the SDK refuses", func() {
			for _, c := range []struct {
				body, reason string
				sdkAccepts   bool
			}{
				{`{"specversion":"1.0","id":"1","source":"/s"}`, "type is missing", false},
				{`{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"}`, `time: "yesterday" is not an RFC 3339 timestamp`, false},
				// The spec says lower-case; the SDK also takes upper case.
				{`{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad":"x"}`, `extension name "Bad" may only have lower-case letters`, true},
				{`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!"}`, "data_base64 is not base64", false},
				{`{"specversion":"1.0","id":"","source":"/s","type":"t"}`, "id: must not be empty", false},
				{`not json`, "a structured event must be a JSON object", false},
			} {
				h := nats.Header{"Content-Type": {"application/cloudevents+json"}}
				_, err := deliver(h, []byte(c.body))
				Expect(reason(err)).To(ContainSubstring(c.reason), c.body)
				_, sdkErr := sdkReceive(http.Header{"Content-Type": {"application/cloudevents+json"}}, []byte(c.body))
				Expect(sdkErr == nil).To(Equal(c.sdkAccepts), "the SDK's verdict on %s: %v", c.body, sdkErr)
			}
		})

		it("refuses batches and other event formats", func() {
			_, err := deliver(nats.Header{"Content-Type": {"application/cloudevents-batch+json"}}, []byte("[]"))
			Expect(reason(err)).To(ContainSubstring("batched events"))
			_, err = deliver(nats.Header{"Content-Type": {"application/cloudevents+avro"}}, []byte("x"))
			Expect(reason(err)).To(ContainSubstring(`event format "application/cloudevents+avro" is not supported`))
		})
	})

	when("a publisher hands an event in", func() {
		// sdkHTTPRequest is e as the SDK's HTTP sender writes it.
		sdkHTTPRequest := func(e event.Event, structured bool) (http.Header, []byte) {
			ctx := binding.WithForceBinary(context.Background())
			if structured {
				ctx = binding.WithForceStructured(context.Background())
			}
			req, _ := http.NewRequest("POST", "http://sidecar/publish/orders.created", nil)
			Expect(cehttp.WriteRequest(ctx, binding.ToMessage(&e), req)).To(Succeed())
			body, _ := io.ReadAll(req.Body)
			return req.Header, body
		}
		sdkNATSReceive := func(h nats.Header, data []byte) *event.Event {
			e, err := binding.ToEvent(context.Background(), nats_jetstream.NewMessage(&nats.Msg{Header: h, Data: data}))
			Expect(err).NotTo(HaveOccurred())
			Expect(e.Validate()).To(Succeed())
			return e
		}

		it("stores an SDK HTTP binary event in the NATS binding, every attribute kept", func() {
			want := sdkEvent()
			hh, body := sdkHTTPRequest(want, false)
			h := nats.Header(hh.Clone())
			Expect(ce.Ingest(h, body, true)).To(Succeed())
			Expect(h.Get("ce-datacontenttype")).To(Equal("application/json"))
			Expect(h.Get("Content-Type")).To(BeEmpty())
			Expect(h.Get("ce-id")).To(Equal("order-1"))
			sameEvent(*sdkNATSReceive(h, body), want)

			// and delivered back over HTTP as the same event
			got, err := deliver(h, body)
			Expect(err).NotTo(HaveOccurred())
			e, err := sdkReceive(got, body)
			Expect(err).NotTo(HaveOccurred())
			sameEvent(*e, want)
		})

		it("stores a structured event as it is, and refuses ce- headers beside it", func() {
			want := sdkEvent()
			hh, body := sdkHTTPRequest(want, true)
			h := nats.Header{"Content-Type": hh.Values("Content-Type")}
			Expect(ce.Ingest(h, body, true)).To(Succeed())
			Expect(h.Get("Content-Type")).To(HavePrefix("application/cloudevents+json"))
			sameEvent(*sdkNATSReceive(h, body), want)

			h["Ce-Type"] = []string{"other"}
			Expect(reason(ce.Ingest(h, body, true))).To(ContainSubstring("header Ce-Type beside a structured event"))
		})

		it("marks a structured event sent without Content-Type", func() {
			_, data := natsMsg(t, sdkEvent(), true)
			h := nats.Header{}
			Expect(ce.Ingest(h, data, false)).To(Succeed())
			Expect(h.Get("Content-Type")).To(Equal("application/cloudevents+json"))
			Expect(reason(ce.Ingest(nats.Header{}, []byte(`{"specversion":"1.0"}`), false))).To(HavePrefix(
				"the payload is a JSON object with a top-level specversion, so a structured event, and id is missing"))
		})

		it("percent-encodes raw values given on the command line, and decodes HTTP ones", func() {
			h := nats.Header{"ce-type": {"order created"}, "Ce-Tenant": {"ACME €"}}
			Expect(ce.Ingest(h, nil, false)).To(Succeed())
			Expect(h).To(Equal(nats.Header{"ce-type": {"order%20created"}, "ce-tenant": {"ACME%20%E2%82%AC"}}))

			h = nats.Header{"Ce-Type": {"order%20created"}}
			Expect(ce.Ingest(h, nil, true)).To(Succeed())
			Expect(h).To(Equal(nats.Header{"ce-type": {"order%20created"}}))
		})

		it("refuses a binary event without id, source or type, and a repeated attribute", func() {
			err := ce.Ingest(nats.Header{"ce-specversion": {"1.0"}, "ce-source": {"/s"}, "ce-type": {"t"}}, nil, false)
			Expect(err.Error()).To(Equal("invalid CloudEvent: a binary event (ce-specversion given) needs ce-id, ce-source and ce-type: ce-id is missing"))
			err = ce.Ingest(nats.Header{"ce-type": {"a"}, "CE-TYPE": {"b"}}, nil, false)
			Expect(reason(err)).To(Equal("ce-type is given twice"))
			err = ce.Ingest(nats.Header{"Ce-Type": {"a", "b"}}, nil, true)
			Expect(reason(err)).To(Equal("header Ce-Type has 2 values"))
		})

		it("leaves a plain event alone", func() {
			h := nats.Header{"Content-Type": {"application/json"}, "Nats-Msg-Id": {"x y"}, "X-Other": {"1"}}
			Expect(ce.Ingest(h, []byte(`{"id":1}`), true)).To(Succeed())
			Expect(h).To(Equal(nats.Header{"Content-Type": {"application/json"}, "Nats-Msg-Id": {"x y"}, "X-Other": {"1"}}))
		})
	})

	when("values are encoded and decoded", func() {
		it("follows the binding's examples", func() {
			Expect(ce.Encode("Euro € 😀")).To(Equal("Euro%20%E2%82%AC%20%F0%9F%98%80"))
			v, err := ce.Decode("Euro%20%e2%82%ac%20%F0%9F%98%80")
			Expect(err).NotTo(HaveOccurred())
			Expect(v).To(Equal("Euro € 😀"))
			v, err = ce.Decode(`"a \"quoted\" value"`)
			Expect(err).NotTo(HaveOccurred())
			Expect(v).To(Equal(`a "quoted" value`))
			v, err = ce.Decode("100%")
			Expect(err).NotTo(HaveOccurred())
			Expect(v).To(Equal("100%"), "a stray % is kept")
			_, err = ce.Decode("%C0%A0")
			Expect(err).To(HaveOccurred(), "an overlong encoding is not UTF-8")
		})
	})
}
