package topic_test

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestTopic(t *testing.T) {
	spec.Run(t, "topic", testTopic, spec.Report(report.Terminal{}))
}

func testTopic(t *testing.T, when spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	when("validating", func() {
		it("accepts literal subjects of allowed tokens", func() {
			for _, ok := range []string{"orders", "orders.created", "a-b.c_d.E9", strings.Repeat("a.", 15) + "a", strings.Repeat("x", 200)} {
				Expect(topic.Validate(ok)).To(Succeed(), ok)
			}
		})

		it("names the rule each bad topic breaks", func() {
			cases := map[string]string{
				"":                             "must not be empty",
				strings.Repeat("x", 201):       "at most 200 characters",
				"orders.*":                     "wildcards",
				"orders.>":                     "wildcards",
				"$JS.API":                      "reserved for NATS",
				"_INBOX.abc":                   "reserved for NATS",
				"hottopic.dlq.orders":          "reserved for Hot Topic",
				"orders..created":              "must not be empty",
				".orders":                      "must not be empty",
				"orders created":               "not allowed",
				"orders/created":               "not allowed",
				"héllo":                        "character 'é' is not allowed",
				"日本.orders":                    "character '日' is not allowed",
				"h\xc3llo":                     "byte 0xC3 is not valid UTF-8",
				strings.Repeat("a.", 16) + "a": "at most 16",
			}
			for in, rule := range cases {
				err := topic.Validate(in)
				Expect(err).To(HaveOccurred(), in)
				Expect(err.Error()).To(ContainSubstring(rule), in)
				Expect(err.Error()).NotTo(ContainSubstring("\n"))
			}
		})

		it("parses comma lists, trimming and de-duplicating", func() {
			list, err := topic.ParseList(" a.b, c ,a.b,,")
			Expect(err).NotTo(HaveOccurred())
			Expect(list).To(Equal([]string{"a.b", "c"}))

			_, err = topic.ParseList("a,b.*")
			Expect(err).To(MatchError(ContainSubstring("wildcards")))
		})
	})

	when("naming streams", func() {
		it("keeps plain topics readable", func() {
			Expect(topic.StreamName("orders.created")).To(Equal("HT_orders_created"))
			Expect(topic.StreamName("thumbnails")).To(Equal("HT_thumbnails"))
		})

		it("never maps two topics to one stream", func() {
			topics := []string{"a.b", "a_b", "a_.b", "a._b", "a__b", "a.b_", "a.b.c", "a_b_c", "a.b_c", "a_b.c", "A.b"}
			seen := map[string]string{}
			for _, tp := range topics {
				name := topic.StreamName(tp)
				Expect(seen).NotTo(HaveKey(name), tp+" collides with "+seen[name])
				seen[name] = tp
				Expect(name).NotTo(ContainSubstring("."))
				Expect(len(name)).To(BeNumerically("<=", 255))
			}
		})

		it("is deterministic and fits JetStream's name limit for the longest topic", func() {
			long := strings.Repeat("a_", 99) + "a"
			Expect(topic.StreamName(long)).To(Equal(topic.StreamName(long)))
			Expect(len(topic.StreamName(long))).To(BeNumerically("<=", 255))
		})
	})

	it("names dead-letter subjects and consumers", func() {
		Expect(topic.DLQSubject("orders.created")).To(Equal("hottopic.dlq.orders.created"))
		Expect(topic.ConsumerName("fa05-11")).To(Equal("fa05-11"))
		Expect(topic.ValidConsumerName("")).To(HaveOccurred())
		Expect(topic.ValidConsumerName("a.b")).To(HaveOccurred())
		Expect(topic.ValidConsumerName("0e3c5b9a-4b53-4c0e-9a53-1c0e7f2b8d11")).To(Succeed())
	})
}
