package scaler

import (
	"fmt"
	"time"

	"github.com/hottopic-io/hottopic/internal/mapping"
)

// Policy turns one app's observed lag into an instance count, as docs/design.md
// says: proportional, up at once, down only after the lower value held for
// idle-seconds, to zero only after idle-seconds without lag. It is a pure
// state machine over the times it is given (no clock of its own, no I/O), so
// idle and flapping behaviour is tested without sleeping. One per mapping; not
// safe for concurrent use.
type Policy struct {
	// window holds the samples of the last idle-seconds as a monotonic queue
	// (targets strictly decreasing from front to back): the front is the
	// highest target seen in the window, the lowest value a scale-down may go to.
	window []sample
	// since is when the current unbroken run of known lags began; zero when
	// there is none. A scale-down needs idle-seconds of observation.
	since time.Time
}

type sample struct {
	at     time.Time
	end    time.Time // when the next sample replaced it; zero while it is the latest
	target int
	lag    int64
}

// Decision is what the policy wants for the app now.
type Decision struct {
	// Wanted is the count the current lag alone asks for (clamped).
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

// Observe records the lag read at now.
func (p *Policy) Observe(now time.Time, lag int64, s mapping.Settings) {
	w := Wanted(lag, s)
	if n := len(p.window); n > 0 && p.window[n-1].end.IsZero() {
		p.window[n-1].end = now
	}
	for len(p.window) > 0 && p.window[len(p.window)-1].target <= w {
		p.window = p.window[:len(p.window)-1]
	}
	p.window = append(p.window, sample{at: now, target: w, lag: lag})
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
		d.Reason = upReason(last.lag, last.target, s)
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

func upReason(lag int64, target int, s mapping.Settings) string {
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

func downReason(peak sample, s mapping.Settings) string {
	if peak.lag == 0 {
		if peak.target > 0 {
			return fmt.Sprintf("no lag for %ds, min-instances %d", s.IdleSeconds, s.MinInstances)
		}
		return fmt.Sprintf("no lag for %ds", s.IdleSeconds)
	}
	return fmt.Sprintf("lag %d, %d per instance, after %ds idle", peak.lag, s.LagPerInstance, s.IdleSeconds)
}
