package scaler

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// TestObserveFeedsTheFlow checks that a poll feeds each app's policy the
// flow summed over its topics, so production sizes apps as scripts/simscale
// simulates: 100/s arrive over two topics with 10 in flight at a lag of 10,
// which the lag alone would serve with one instance.
func TestObserveFeedsTheFlow(t *testing.T) {
	Expect := NewWithT(t).Expect
	const guid = "app-guid"
	m := mapping.Mapping{AppGUID: guid, Topics: []string{"a", "b"}, Settings: mapping.Defaults()}
	s := &Scaler{apps: map[string]*appState{guid: {m: m, errors: map[string]string{}}}}
	read := func(arrivedA, arrivedB int64) lags {
		return lags{streams: map[string]*streamLook{
			topic.StreamName("a"): {read: true, consumers: map[string]consumerCounts{guid: {lag: 6, inFlight: 6, arrived: arrivedA}}},
			topic.StreamName("b"): {read: true, consumers: map[string]consumerCounts{guid: {lag: 4, inFlight: 4, arrived: arrivedB}}},
		}}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range int64(5) {
		evals, missing := s.observe(now.Add(time.Duration(i)*time.Second), read(60*i, 40*i), nil)
		Expect(missing).To(BeFalse())
		Expect(evals).To(HaveLen(1))
	}
	st := s.apps[guid]
	Expect(st.lag).To(BeEquivalentTo(10))
	arrivals, perInstance := st.policy.Rates()
	Expect(arrivals).To(BeNumerically("~", 100, 0.01))
	Expect(perInstance).To(BeNumerically("~", 10, 0.01))
	d := st.policy.Decide(now.Add(4*time.Second), 1, m.Settings)
	Expect(d.Target).To(Equal(10))
	Expect(d.Reason).To(Equal("arrivals 100.0/s, 10.0/s per instance, lag 10, 10 per instance, max-instances 10"))
}
