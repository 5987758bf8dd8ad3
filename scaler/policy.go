package scaler

import (
	"fmt"
	"math"
	"time"

	"github.com/hottopic-io/hottopic/internal/mapping"
)

// Policy turns one app's observed lag — and, when known, its flow of events —
// into an instance count, as docs/design.md says: the floor is proportional
// to lag (lag-per-instance); with flow readings it also keeps up with the
// measured arrival rate at the measured per-instance completion rate. Up at
// once, down only after the lower value held for idle-seconds, to zero only
// after idle-seconds without lag. It is a pure state machine over the times it
// is given (no clock of its own, no I/O), so idle and flapping behaviour is
// tested without sleeping. One per mapping; not safe for concurrent use.
type Policy struct {
	// window holds the samples of the last idle-seconds as a monotonic queue
	// (targets strictly decreasing from front to back): the front is the
	// highest target seen in the window, the lowest value a scale-down may go to.
	window []sample
	// since is when the current unbroken run of known lags began; zero when
	// there is none. A scale-down needs idle-seconds of observation.
	since time.Time

	// flows are the flow readings of the last RateWindow (and the one just
	// before it), oldest first: both rates are measured over them. rate is
	// the per-instance estimate in use, kept while the window shows no work.
	flows []flowReading
	rate  float64
}

type sample struct {
	at     time.Time
	end    time.Time // when the next sample replaced it; zero while it is the latest
	target int
	lag    int64
	// arrivals and perInstance are the rates that asked for more than the
	// lag floor (both zero when the floor decided).
	arrivals, perInstance float64
}

// Flow is what the scaler reads with the lag, at no extra request: the
// events ever published to the mapping's topics (cumulative; only its
// differences matter) and, of the lag, how many events are in flight
// (delivered to an instance, not yet acknowledged).
type Flow struct {
	Arrived  int64
	InFlight int64
}

type flowReading struct {
	at       time.Time
	arrived  int64
	lag      int64
	inFlight int64
}

// RateWindow is how far back flow readings are kept: the per-instance
// completion rate is measured over all of them.
const RateWindow = 30 * time.Second

// Decision is what the policy wants for the app now.
type Decision struct {
	// Wanted is the count the last reading asks for (clamped): the lag floor,
	// or more when the flow says arrivals need more.
	Wanted int
	// Target is the count the app should run now; equal to the current count
	// when nothing is to change.
	Target int
	// Reason says why Target differs from the current count (empty when not).
	Reason string
	// Lag is the lag that justifies Target (the window's peak on a scale-down).
	Lag int64
}

// Wanted is clamp(ceil(lag / lag-per-instance), min, max), and at least one
// instance whenever there is lag (activation from zero).
func Wanted(lag int64, s mapping.Settings) int {
	if lag <= 0 {
		return clamp(0, s.MinInstances, s.MaxInstances)
	}
	per := int64(max(s.LagPerInstance, 1))
	n := (lag + per - 1) / per
	if n > int64(s.MaxInstances) {
		n = int64(s.MaxInstances)
	}
	return clamp(max(int(n), 1), s.MinInstances, max(s.MaxInstances, 1))
}

func clamp(n, lo, hi int) int {
	if n < lo {
		n = lo
	}
	if n > hi {
		n = hi
	}
	return n
}

// Observe records the lag read at now, without a flow reading: the lag floor
// decides, and the next flow reading starts a new interval.
func (p *Policy) Observe(now time.Time, lag int64, s mapping.Settings) {
	p.flows = p.flows[:0]
	p.record(now, sample{target: Wanted(lag, s), lag: lag}, s)
}

// ObserveFlow records the lag and the flow read at now. The app is sized to
// keep up with arrivals and to drain what waits undelivered at
// lag-per-instance per instance:
//
//	max(Wanted(lag), ceil(arrivals/perInstance + (lag-inFlight)/lag-per-instance))
//
// clamped to min and max. arrivals is the publish rate over ArrivalWindow.
// perInstance follows from Little's law over RateWindow: an event holds
// one of concurrency slots for busy/completed seconds, where completed =
// arrived - growth of the lag and busy = the time-integral of events in
// flight; so one instance completes concurrency*completed/busy events per
// second. Instances starting up hold no events and do not bias it. Until an
// event has completed in view, the lag floor alone decides.
func (p *Policy) ObserveFlow(now time.Time, lag int64, f Flow, s mapping.Settings) {
	p.measure(now, lag, f, s)
	smp := sample{target: Wanted(lag, s), lag: lag}
	arrivals := p.arrivalRate()
	if p.rate > 0 && arrivals > 0 {
		waiting := max(0, lag-max(f.InFlight, 0))
		need := arrivals/p.rate + float64(waiting)/float64(max(s.LagPerInstance, 1))
		n := clamp(int(math.Ceil(need-1e-9)), s.MinInstances, max(s.MaxInstances, 1))
		if n > smp.target {
			smp.target, smp.arrivals, smp.perInstance = n, arrivals, p.rate
		}
	}
	p.record(now, smp, s)
}

// measure adds the flow reading at now and updates the per-instance rate.
func (p *Policy) measure(now time.Time, lag int64, f Flow, s mapping.Settings) {
	if n := len(p.flows); n > 0 {
		prev := p.flows[n-1]
		switch {
		case !now.After(prev.at):
			return // not a new reading
		case f.Arrived < prev.arrived:
			p.flows = p.flows[:0] // the counter went back (a stream made anew): start again
		}
	}
	p.flows = append(p.flows, flowReading{at: now, arrived: f.Arrived, lag: lag, inFlight: max(f.InFlight, 0)})
	cutoff := now.Add(-RateWindow)
	drop := 0
	for drop < len(p.flows)-2 && !p.flows[drop+1].at.After(cutoff) {
		drop++
	}
	p.flows = append(p.flows[:0], p.flows[drop:]...)
	var done, busy float64
	for i := 1; i < len(p.flows); i++ {
		a, b := p.flows[i-1], p.flows[i]
		done += float64((b.arrived - a.arrived) - (b.lag - a.lag))
		busy += float64(a.inFlight+b.inFlight) / 2 * b.at.Sub(a.at).Seconds()
	}
	if done > 0 && busy > 0 {
		p.rate = float64(max(s.Concurrency, 1)) * done / busy
	}
}

// arrivalRate is the events per second published over the last
// ArrivalWindow of flow readings (from the latest reading at least that old,
// or the oldest held).
func (p *Policy) arrivalRate() float64 {
	if len(p.flows) < 2 {
		return 0
	}
	b := p.flows[len(p.flows)-1]
	a := p.flows[0]
	for i := len(p.flows) - 2; i >= 0; i-- {
		if a = p.flows[i]; b.at.Sub(a.at) >= ArrivalWindow {
			break
		}
	}
	return float64(b.arrived-a.arrived) / b.at.Sub(a.at).Seconds()
}

// ArrivalWindow is how far back the arrival rate is measured: short, so that
// a burst the instances absorb still counts as the rate it was, and the
// policy's idle-seconds window keeps its count for the next one.
const ArrivalWindow = 2 * time.Second

// Rates are the measured arrival rate (events/s over the last ArrivalWindow)
// and per-instance completion rate (0 while not measured).
func (p *Policy) Rates() (arrivals, perInstance float64) { return p.arrivalRate(), p.rate }

func (p *Policy) record(now time.Time, smp sample, s mapping.Settings) {
	w := smp.target
	if n := len(p.window); n > 0 && p.window[n-1].end.IsZero() {
		p.window[n-1].end = now
	}
	for len(p.window) > 0 && p.window[len(p.window)-1].target <= w {
		p.window = p.window[:len(p.window)-1]
	}
	smp.at = now
	p.window = append(p.window, smp)
	if p.since.IsZero() {
		p.since = now
	}
	cutoff := now.Add(-idle(s))
	drop := 0
	// A sample holds until the next one: drop it once it stopped holding
	// before the window began.
	for drop < len(p.window)-1 && !p.window[drop].end.After(cutoff) {
		drop++
	}
	if drop > 0 {
		p.window = append(p.window[:0], p.window[drop:]...)
	}
}

// Unknown records that the lag could not be read: idle time must be observed
// afresh before any scale-down (an outage is never mistaken for idleness).
func (p *Policy) Unknown() {
	p.window = p.window[:0]
	p.since = time.Time{}
	p.flows = p.flows[:0]
}

// Decide says what the app, now running current instances, should run.
func (p *Policy) Decide(now time.Time, current int, s mapping.Settings) Decision {
	if len(p.window) == 0 {
		return Decision{Wanted: current, Target: current}
	}
	last := p.window[len(p.window)-1]
	d := Decision{Wanted: last.target, Target: current, Lag: last.lag}
	switch {
	case last.target > current:
		d.Target = last.target
		d.Reason = upReason(last, s)
	case current > s.MaxInstances:
		d.Target = s.MaxInstances
		d.Reason = fmt.Sprintf("above max-instances %d", s.MaxInstances)
	case last.target < current && now.Sub(p.since) >= idle(s):
		peak := p.window[0]
		if peak.target < current {
			d.Target, d.Lag = peak.target, peak.lag
			d.Reason = downReason(peak, s)
		}
	}
	return d
}

func idle(s mapping.Settings) time.Duration { return time.Duration(s.IdleSeconds) * time.Second }

func upReason(smp sample, s mapping.Settings) string {
	lag, target := smp.lag, smp.target
	if smp.arrivals > 0 {
		return rateReason(smp, s)
	}
	if lag == 0 {
		return fmt.Sprintf("min-instances %d", s.MinInstances)
	}
	r := fmt.Sprintf("lag %d, %d per instance", lag, s.LagPerInstance)
	switch {
	case target == s.MaxInstances && lag > int64(s.MaxInstances)*int64(s.LagPerInstance):
		r += fmt.Sprintf(", capped at max-instances %d", s.MaxInstances)
	case target == s.MinInstances && lag < int64(s.MinInstances-1)*int64(s.LagPerInstance)+1:
		r += fmt.Sprintf(", min-instances %d", s.MinInstances)
	}
	return r
}

// rateReason explains a count the flow asked for.
func rateReason(smp sample, s mapping.Settings) string {
	r := fmt.Sprintf("arrivals %.1f/s, %.1f/s per instance, lag %d, %d per instance", smp.arrivals, smp.perInstance, smp.lag, s.LagPerInstance)
	if smp.target == s.MaxInstances {
		r += fmt.Sprintf(", max-instances %d", s.MaxInstances)
	}
	return r
}

func downReason(peak sample, s mapping.Settings) string {
	if peak.arrivals > 0 {
		return rateReason(peak, s) + fmt.Sprintf(", after %ds idle", s.IdleSeconds)
	}
	if peak.lag == 0 {
		if peak.target > 0 {
			return fmt.Sprintf("no lag for %ds, min-instances %d", s.IdleSeconds, s.MinInstances)
		}
		return fmt.Sprintf("no lag for %ds", s.IdleSeconds)
	}
	return fmt.Sprintf("lag %d, %d per instance, after %ds idle", peak.lag, s.LagPerInstance, s.IdleSeconds)
}
