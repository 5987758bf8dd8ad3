package mapping_test

import (
	"testing"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/mapping"
)

func TestMapping(t *testing.T) {
	spec.Run(t, "mapping", testMapping, spec.Report(report.Terminal{}))
}

func testMapping(t *testing.T, when spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	when("resolving CC annotations", func() {
		it("bounds max-instances, naming the bound", func() {
			_, err := mapping.FromMetadata("g1", "fn", map[string]string{mapping.AnnTopics: "a", mapping.AnnMax: "2000000000"})
			Expect(err).To(MatchError("max-instances must be between 1 and 1000, got 2000000000"))
			m, err := mapping.FromMetadata("g1", "fn", map[string]string{mapping.AnnTopics: "a", mapping.AnnMax: "1000"})
			Expect(err).NotTo(HaveOccurred())
			Expect(m.MaxInstances).To(Equal(mapping.MaxInstancesLimit))
		})

		it("lists unknown hottopic.io/* annotations, with the likely known one", func() {
			Expect(mapping.UnknownAnnotations(map[string]string{
				mapping.AnnTopics: "a", mapping.AnnMax: "3", "owner": "ops", "example.com/max": "1",
				"hottopic.io/max-instance": "3", "hottopic.io/colour": "blue",
			})).To(Equal([]string{
				"unknown annotation hottopic.io/colour is ignored",
				"unknown annotation hottopic.io/max-instance is ignored (did you mean hottopic.io/max-instances?)",
			}))
			Expect(mapping.UnknownAnnotations(map[string]string{mapping.AnnTopics: "a"})).To(BeEmpty())
		})

		it("fills defaults for missing settings", func() {
			m, err := mapping.FromMetadata("g1", "thumbs", map[string]string{mapping.AnnTopics: "images.uploaded, images.resized"})
			Expect(err).NotTo(HaveOccurred())
			Expect(m.Topics).To(Equal([]string{"images.uploaded", "images.resized"}))
			Expect(m.Settings).To(Equal(mapping.Defaults()))
			Expect(m.Settings).To(Equal(mapping.Settings{MaxInstances: 10, LagPerInstance: 10, IdleSeconds: 60, Concurrency: 1, Path: "/", TimeoutSeconds: 60, MaxDeliver: 5, BatchSize: 1, BatchWaitMS: 20}))
		})

		it("reads every setting", func() {
			m, err := mapping.FromMetadata("g1", "thumbs", map[string]string{
				mapping.AnnTopics: "a", mapping.AnnMin: "1", mapping.AnnMax: "4", mapping.AnnLagPer: "5",
				mapping.AnnIdleSeconds: "30", mapping.AnnConcurrency: "8", mapping.AnnPath: "/events",
				mapping.AnnTimeout: "10", mapping.AnnMaxDeliver: "3", mapping.AnnOutputTopic: "b.c",
			})
			Expect(err).NotTo(HaveOccurred())
			Expect(m.Settings).To(Equal(mapping.Settings{MinInstances: 1, MaxInstances: 4, LagPerInstance: 5, IdleSeconds: 30, Concurrency: 8, Path: "/events", TimeoutSeconds: 10, MaxDeliver: 3, OutputTopic: "b.c", BatchSize: 1, BatchWaitMS: 20}))

			m, err = mapping.FromMetadata("g1", "thumbs", map[string]string{
				mapping.AnnTopics: "a", mapping.AnnConcurrency: "4", mapping.AnnBatchSize: "250", mapping.AnnBatchWait: "0",
			})
			Expect(err).NotTo(HaveOccurred())
			Expect(m.BatchSize).To(Equal(250))
			Expect(m.BatchWaitMS).To(Equal(0))
		})

		it("names the bad annotation", func() {
			cases := []struct {
				ann  map[string]string
				want string
			}{
				{map[string]string{}, "hottopic.io/topics is empty or missing"},
				{map[string]string{mapping.AnnTopics: "a.*"}, "wildcards"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnMax: "ten"}, `annotation hottopic.io/max-instances must be a whole number, got "ten"`},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnMin: "5", mapping.AnnMax: "2"}, "min-instances (5) must not exceed max-instances (2)"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnMin: "-1"}, "min-instances must be 0 or more"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnPath: "events"}, "path must start with '/'"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnOutputTopic: "hottopic.x"}, "output-topic"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnConcurrency: "0"}, "concurrency"},
				{map[string]string{mapping.AnnTopics: "a,b", mapping.AnnOutputTopic: "b"}, `output-topic "b" is also an input topic`},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnBatchSize: "0"}, "batch-size must be between 1 and 1000, got 0"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnBatchSize: "1001"}, "batch-size must be between 1 and 1000, got 1001"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnBatchSize: "lots"}, `annotation hottopic.io/batch-size must be a whole number, got "lots"`},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnBatchWait: "-1"}, "batch-wait-ms must be between 0 and 60000, got -1"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnBatchSize: "100", mapping.AnnConcurrency: "11"}, "concurrency × batch-size must not exceed 1000"},
				{map[string]string{mapping.AnnTopics: "a", mapping.AnnBatchSize: "10", mapping.AnnOutputTopic: "b"}, "batch-size 10 cannot be combined with output-topic"},
			}
			for _, c := range cases {
				_, err := mapping.FromMetadata("g", "n", c.ann)
				Expect(err).To(MatchError(ContainSubstring(c.want)), c.want)
			}
		})

		it("knows the mapped label", func() {
			Expect(mapping.IsMapped(map[string]string{mapping.LabelMapped: "true"})).To(BeTrue())
			Expect(mapping.IsMapped(map[string]string{mapping.LabelMapped: "false"})).To(BeFalse())
		})

		it("renders settings back to annotations that resolve to the same settings", func() {
			s := mapping.Defaults()
			s.OutputTopic = "out"
			ann := s.Annotations()
			Expect(ann).NotTo(HaveKey(mapping.AnnBatchSize))
			ann[mapping.AnnTopics] = "a"
			m, err := mapping.FromMetadata("g", "n", ann)
			Expect(err).NotTo(HaveOccurred())
			Expect(m.Settings).To(Equal(s))

			s = mapping.Defaults()
			s.BatchSize, s.BatchWaitMS = 50, 5
			ann = s.Annotations()
			ann[mapping.AnnTopics] = "a"
			m, err = mapping.FromMetadata("g", "n", ann)
			Expect(err).NotTo(HaveOccurred())
			Expect(m.Settings).To(Equal(s))
		})
	})

	when("static mode from the environment", func() {
		env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

		it("is off without HOTTOPIC_TOPICS", func() {
			_, ok, err := mapping.FromEnv("g", "n", env(nil))
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse())
		})

		it("reads topics and the sidecar settings", func() {
			m, ok, err := mapping.FromEnv("g", "n", env(map[string]string{
				"HOTTOPIC_TOPICS": "a,b", "HOTTOPIC_CONCURRENCY": "4", "HOTTOPIC_PATH": "/in",
				"HOTTOPIC_TIMEOUT_SECONDS": "5", "HOTTOPIC_MAX_DELIVER": "2", "HOTTOPIC_OUTPUT_TOPIC": "c",
			}))
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(m.Topics).To(Equal([]string{"a", "b"}))
			Expect(m.Concurrency).To(Equal(4))
			Expect(m.Path).To(Equal("/in"))
			Expect(m.TimeoutSeconds).To(Equal(5))
			Expect(m.MaxDeliver).To(Equal(2))
			Expect(m.OutputTopic).To(Equal("c"))
			Expect(m.BatchSize).To(Equal(1))

			m, _, err = mapping.FromEnv("g", "n", env(map[string]string{"HOTTOPIC_TOPICS": "a", "HOTTOPIC_BATCH_SIZE": "100", "HOTTOPIC_BATCH_WAIT_MS": "50"}))
			Expect(err).NotTo(HaveOccurred())
			Expect(m.BatchSize).To(Equal(100))
			Expect(m.BatchWaitMS).To(Equal(50))
		})

		it("names the bad variable", func() {
			_, _, err := mapping.FromEnv("g", "n", env(map[string]string{"HOTTOPIC_TOPICS": "a", "HOTTOPIC_CONCURRENCY": "many"}))
			Expect(err).To(MatchError(`HOTTOPIC_CONCURRENCY must be a whole number, got "many"`))
			_, _, err = mapping.FromEnv("g", "n", env(map[string]string{"HOTTOPIC_TOPICS": "$SYS"}))
			Expect(err).To(MatchError(ContainSubstring("HOTTOPIC_TOPICS")))
			_, _, err = mapping.FromEnv("g", "n", env(map[string]string{"HOTTOPIC_TOPICS": "a", "HOTTOPIC_OUTPUT_TOPIC": "a"}))
			Expect(err).To(MatchError(ContainSubstring("also an input topic")))
			_, _, err = mapping.FromEnv("g", "n", env(map[string]string{"HOTTOPIC_TOPICS": "a", "HOTTOPIC_BATCH_SIZE": "2000"}))
			Expect(err).To(MatchError("HOTTOPIC_BATCH_SIZE: batch-size must be between 1 and 1000, got 2000"))
			_, _, err = mapping.FromEnv("g", "n", env(map[string]string{"HOTTOPIC_TOPICS": "a", "HOTTOPIC_BATCH_WAIT_MS": "soon"}))
			Expect(err).To(MatchError(`HOTTOPIC_BATCH_WAIT_MS must be a whole number, got "soon"`))
			_, _, err = mapping.FromEnv("g", "n", env(map[string]string{"HOTTOPIC_TOPICS": " , "}))
			Expect(err).To(MatchError(ContainSubstring("names no topic")))
		})
	})

	it("round-trips the KV value and validates on decode", func() {
		m := mapping.Mapping{AppGUID: "g", AppName: "n", Topics: []string{"a"}, Settings: mapping.Defaults()}
		b, err := m.Encode()
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(ContainSubstring(`"max_deliver":5`))
		back, err := mapping.Decode(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(back).To(Equal(m))

		_, err = mapping.Decode([]byte(`{"app_guid":"g","topics":[]}`))
		Expect(err).To(MatchError(ContainSubstring("no topics")))
		old, err := mapping.Decode([]byte(`{"app_guid":"g","topics":["a"]}`)) // written before batches
		Expect(err).NotTo(HaveOccurred())
		Expect(old.BatchSize).To(Equal(1))
		_, err = mapping.Decode([]byte(`{`))
		Expect(err).To(HaveOccurred())
	})
}

func TestNoBinding(t *testing.T) {
	for _, c := range []struct {
		buses []string
		want  string
	}{
		{nil, "app enrich has no hottopic service binding: run cf create-service hottopic standard BUS, then cf bind-service enrich BUS"},
		{[]string{"orders-bus"}, "app enrich has no hottopic service binding: run cf bind-service enrich orders-bus"},
		{[]string{"a", "b"}, "app enrich has no hottopic service binding: run cf bind-service enrich BUS, BUS one of a, b"},
	} {
		if got := mapping.NoBinding("enrich", c.buses).Error(); got != c.want {
			t.Errorf("NoBinding(%v) = %q, want %q", c.buses, got, c.want)
		}
	}
}
