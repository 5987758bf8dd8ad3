package scaler_test

import (
	"math"
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

	when("the flow of events is read with the lag", func() {
		var arrived int64
		// flow advances one second during which perSecond events arrived,
		// reads lag (inFlight of it delivered), decides and applies the
		// decision.
		flow := func(perSecond, lag, inFlight int64) scaler.Decision {
			advance(time.Second)
			arrived += perSecond
			p.ObserveFlow(now, lag, scaler.Flow{Arrived: arrived, InFlight: inFlight}, s)
			d := p.Decide(now, current, s)
			current = d.Target
			return d
		}
		it.Before(func() {
			arrived = 0
			s.MaxInstances = 20
		})

		it("keeps up with arrivals even when the lag is small", func() {
			current = 10
			p.ObserveFlow(now, 10, scaler.Flow{Arrived: 0, InFlight: 10}, s)
			for range 120 {
				// 100/s arrive and complete with 10 in flight: 100 ms an
				// event, 10/s an instance; lag 10 alone asks for 1.
				d := flow(100, 10, 10)
				Expect(d.Wanted).To(Equal(10))
				Expect(current).To(Equal(10))
			}
			arrivals, perInstance := p.Rates()
			Expect(arrivals).To(BeNumerically("~", 100, 0.01))
			Expect(perInstance).To(BeNumerically("~", 10, 0.01))
		})

		it("scales up to what the arrivals need, naming the rates", func() {
			current = 10
			p.ObserveFlow(now, 10, scaler.Flow{Arrived: 0, InFlight: 10}, s)
			d := flow(150, 15, 15)
			// 150 arrived, 145 done over 12.5 event-seconds in flight:
			// 11.6/s an instance; 150/11.6 = 12.9.
			Expect(d.Target).To(Equal(13))
			Expect(d.Reason).To(Equal("arrivals 150.0/s, 11.6/s per instance, lag 15, 10 per instance"))
		})

		it("adds what waits undelivered at lag-per-instance", func() {
			current = 5
			p.ObserveFlow(now, 5, scaler.Flow{Arrived: 0, InFlight: 5}, s)
			flow(50, 5, 5) // 10/s an instance
			// 145 arrived in 2 s, 100 done over 10 event-seconds: 72.5/s at
			// 10/s is 7.25; 45 wait undelivered: + 4.5 → 12.
			Expect(flow(95, 50, 5).Target).To(Equal(12))
		})

		it("keeps lag-per-instance as the floor", func() {
			s.Concurrency = 100
			current = 2
			p.ObserveFlow(now, 150, scaler.Flow{Arrived: 0, InFlight: 150}, s)
			// Every lagged event in flight: arrivals need 100/s at 66.7/s
			// an instance = 2, but lag 150 asks for 15.
			d := flow(100, 150, 150)
			Expect(d.Target).To(Equal(15))
			Expect(d.Reason).To(Equal("lag 150, 10 per instance"))
		})

		it("counts a burst the instances absorbed at its rate, and keeps the count for idle-seconds", func() {
			current = 2
			p.ObserveFlow(now, 1, scaler.Flow{Arrived: 0, InFlight: 1}, s)
			for range 28 {
				flow(10, 1, 1) // 10/s at 10/s an instance, one in flight
			}
			// 150 arrive within a second and are mostly done by the next
			// reading: the lag never shows them.
			d := flow(150, 15, 15)
			arrivals, perInstance := p.Rates()
			Expect(arrivals).To(BeNumerically("~", 80, 0.01), "over the last 2 s, not averaged over 30")
			Expect(d.Target).To(Equal(int(math.Ceil(arrivals / perInstance))))
			Expect(d.Target).To(BeNumerically(">", 2))
			flow(10, 1, 1) // the burst is still within the last 2 s
			peak := current
			for range 60 {
				flow(10, 1, 1)
			}
			Expect(current).To(Equal(peak), "held for idle-seconds: the next burst finds the instances")
			flow(10, 1, 1)
			Expect(current).To(BeNumerically("<", peak))
		})

		it("decides by lag alone until an event completed in view", func() {
			current = 3
			p.ObserveFlow(now, 0, scaler.Flow{Arrived: 0}, s)
			Expect(flow(30, 30, 0).Target).To(Equal(3))
			_, perInstance := p.Rates()
			Expect(perInstance).To(BeZero())
		})

		it("goes to zero once arrivals stop for idle-seconds", func() {
			current = 10
			p.ObserveFlow(now, 10, scaler.Flow{Arrived: 0, InFlight: 10}, s)
			flow(100, 10, 10)
			for range 40 {
				flow(0, 0, 0)
			}
			Expect(current).To(Equal(10), "arrivals were seen within the last 60 s")
			for range 60 {
				flow(0, 0, 0)
			}
			Expect(current).To(Equal(0))
			_, perInstance := p.Rates()
			Expect(perInstance).To(BeNumerically(">", 0), "kept for the next activation")
		})

		it("starts again when the counter goes back (a stream made anew)", func() {
			p.ObserveFlow(now, 10, scaler.Flow{Arrived: 1000, InFlight: 10}, s)
			advance(time.Second)
			p.ObserveFlow(now, 10, scaler.Flow{Arrived: 5, InFlight: 10}, s)
			arrivals, perInstance := p.Rates()
			Expect(arrivals).To(BeZero())
			Expect(perInstance).To(BeZero())
		})

		it("forgets the flow across an unreadable lag", func() {
			p.ObserveFlow(now, 10, scaler.Flow{Arrived: 0, InFlight: 10}, s)
			p.Unknown()
			flow(100, 10, 10)
			arrivals, perInstance := p.Rates()
			Expect(arrivals).To(BeZero(), "one reading is no interval")
			Expect(perInstance).To(BeZero())
		})
	})
}
