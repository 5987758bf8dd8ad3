package scaler_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler"
)

func TestPolicy(t *testing.T) {
	spec.Run(t, "Policy", testPolicy, spec.Report(report.Terminal{}))
}

func testPolicy(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect  = NewWithT(t).Expect
		p       *scaler.Policy
		s       mapping.Settings
		now     time.Time
		current int
		observe func(lag int64) scaler.Decision
		advance func(d time.Duration)
	)

	it.Before(func() {
		p = &scaler.Policy{}
		s = mapping.Defaults() // 0..10, 10 per instance, 60 s idle
		now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		current = 0
		// observe records lag, decides, and applies the decision as the
		// scaler would after a successful scale call.
		observe = func(lag int64) scaler.Decision {
			p.Observe(now, lag, s)
			d := p.Decide(now, current, s)
			current = d.Target
			return d
		}
		advance = func(d time.Duration) { now = now.Add(d) }
	})

	when("computing the wanted count", func() {
		it("is proportional, at least one with any lag, clamped to min and max", func() {
			Expect(scaler.Wanted(0, s)).To(Equal(0))
			Expect(scaler.Wanted(1, s)).To(Equal(1))
			Expect(scaler.Wanted(10, s)).To(Equal(1))
			Expect(scaler.Wanted(11, s)).To(Equal(2))
			Expect(scaler.Wanted(27, s)).To(Equal(3))
			Expect(scaler.Wanted(1_000_000, s)).To(Equal(10))
			s.MinInstances, s.MaxInstances = 2, 4
			Expect(scaler.Wanted(0, s)).To(Equal(2))
			Expect(scaler.Wanted(5, s)).To(Equal(2))
			Expect(scaler.Wanted(35, s)).To(Equal(4))
			Expect(scaler.Wanted(500, s)).To(Equal(4))
		})
	})

	when("an idle app at zero gets its first event", func() {
		it("activates at once", func() {
			Expect(observe(0).Target).To(Equal(0))
			advance(time.Second)
			d := observe(1)
			Expect(d.Target).To(Equal(1))
			Expect(d.Reason).To(Equal("lag 1, 10 per instance"))
		})
	})

	when("lag grows", func() {
		it("scales up proportionally at once and caps at max", func() {
			d := observe(27)
			Expect(d.Target).To(Equal(3))
			Expect(d.Reason).To(Equal("lag 27, 10 per instance"))
			advance(time.Second)
			d = observe(500)
			Expect(d.Target).To(Equal(10))
			Expect(d.Reason).To(Equal("lag 500, 10 per instance, capped at max-instances 10"))
		})
	})

	when("min-instances is above zero", func() {
		it("raises the app to min at once and never goes below it", func() {
			s.MinInstances = 2
			d := observe(0)
			Expect(d.Target).To(Equal(2))
			Expect(d.Reason).To(Equal("min-instances 2"))
			advance(time.Second)
			observe(45)
			Expect(current).To(Equal(5))
			for range 120 {
				advance(time.Second)
				observe(0)
			}
			Expect(current).To(Equal(2))
		})
	})

	when("the app runs above max-instances", func() {
		it("brings it down to max at once", func() {
			s.MaxInstances = 3
			current = 7
			d := observe(100)
			Expect(d.Target).To(Equal(3))
			Expect(d.Reason).To(Equal("above max-instances 3"))
		})
	})

	when("lag falls", func() {
		it("scales down only after the lower value held for idle-seconds, then to zero after idle-seconds without lag", func() {
			observe(27)
			Expect(current).To(Equal(3))

			advance(time.Second)
			observe(4) // wants 1
			for range 59 {
				advance(time.Second)
				Expect(observe(4).Target).To(Equal(3), "still within idle-seconds")
			}
			advance(time.Second)
			d := observe(4)
			Expect(d.Target).To(Equal(1))
			Expect(d.Reason).To(Equal("lag 4, 10 per instance, after 60s idle"))

			advance(time.Second)
			observe(0)
			for range 59 {
				advance(time.Second)
				Expect(observe(0).Target).To(Equal(1))
			}
			advance(time.Second)
			d = observe(0)
			Expect(d.Target).To(Equal(0))
			Expect(d.Reason).To(Equal("no lag for 60s"))
		})

		it("counts idle time from the last lag, not from the last scale-up", func() {
			observe(27) // up to 3 at t0
			advance(50 * time.Second)
			observe(27) // still busy at t50
			advance(time.Second)
			observe(0) // idle from t51
			advance(59 * time.Second)
			Expect(observe(0).Target).To(Equal(3), "lag stopped only 59 s ago")
			advance(time.Second)
			Expect(observe(0).Target).To(Equal(0))
		})

		it("goes down to the highest count the window still needed", func() {
			observe(100) // 10
			advance(time.Second)
			observe(35) // wants 4
			advance(30 * time.Second)
			observe(12) // wants 2
			advance(30 * time.Second)
			d := observe(12)
			Expect(d.Target).To(Equal(4), "35 was seen within the last 60 s")
			Expect(d.Reason).To(Equal("lag 35, 10 per instance, after 60s idle"))
		})
	})

	when("lag oscillates around a threshold", func() {
		it("scales up once and does not flap", func() {
			observe(9)
			Expect(current).To(Equal(1))
			changes := 0
			for i := range 600 {
				advance(time.Second)
				lag := int64(9)
				if i%2 == 0 {
					lag = 11
				}
				if observe(lag).Reason != "" {
					changes++
				}
			}
			Expect(changes).To(Equal(1))
			Expect(current).To(Equal(2))
		})
	})

	when("the lag could not be read", func() {
		it("never counts the outage as idle time", func() {
			observe(27)
			advance(time.Second)
			observe(0)
			advance(30 * time.Second)
			p.Unknown()
			advance(50 * time.Second)
			Expect(observe(0).Target).To(Equal(3), "idle time restarts after an outage")
			advance(59 * time.Second)
			Expect(observe(0).Target).To(Equal(3))
			advance(time.Second)
			Expect(observe(0).Target).To(Equal(0))
		})

		it("decides nothing before the first reading", func() {
			d := p.Decide(now, 4, s)
			Expect(d.Target).To(Equal(4))
			Expect(d.Reason).To(BeEmpty())
		})
	})

	when("idle-seconds is zero", func() {
		it("follows the lag down at once", func() {
			s.IdleSeconds = 0
			observe(30)
			advance(time.Second)
			Expect(observe(12).Target).To(Equal(2))
			advance(time.Second)
			Expect(observe(0).Target).To(Equal(0))
		})
	})
}
