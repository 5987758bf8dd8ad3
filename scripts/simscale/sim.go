package main

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler"
)

// Model is the app the scaler sizes: how its instances start and work.
type Model struct {
	Startup     float64 // seconds from a scale-up to an instance taking events
	Concurrency int     // events in flight per instance
	// Rate is events/s one instance completes at time t (all its slots busy);
	// each event's service time is exponential with mean Concurrency/Rate(t).
	Rate func(t float64) float64
}

// Trace is a named arrival pattern and the app it feeds.
type Trace struct {
	Name     string
	Seconds  float64
	Arrivals func(t float64) float64 // events/s at t
	PeakRate float64                 // ≥ Arrivals(t) for every t (for thinning)
	Model    Model
}

// Sizer is a scaling policy as the simulated scaler runs it: every poll it
// is given what the scaler reads — the lag, how many of it are in flight,
// the events ever published — and the instances it runs, and answers the
// count to run.
type Sizer interface {
	Size(now time.Time, lag, inFlight, arrived int64, running int) int
}

// Result is one run's figures.
type Result struct {
	Events           int
	P50, P99, MaxAge float64 // event age, publish to completion, seconds
	WarmP99          float64 // p99 age of the events published after Warm seconds
	InstanceSeconds  float64
	PeakInstances    int
}

// Warm is when the warm figures start: the cold start from zero instances
// and the baseline's first stabilisation window are behind.
const Warm = 300.0

// Arrivals draws the publish times of a trace: a Poisson process of rate
// Arrivals(t), by thinning, from seed.
func Arrivals(tr Trace, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []float64
	for t := 0.0; ; {
		t += rng.ExpFloat64() / tr.PeakRate
		if t >= tr.Seconds {
			return out
		}
		if rng.Float64()*tr.PeakRate < tr.Arrivals(t) {
			out = append(out, t)
		}
	}
}

type instance struct {
	ready    float64 // takes events from then on
	busy     int     // events in flight
	stopping bool    // scaled away: takes nothing new, gone once idle
	gone     bool
}

type completion struct {
	at      float64
	publish float64
	inst    *instance
}

type completions []completion

func (c completions) Len() int           { return len(c) }
func (c completions) Less(i, j int) bool { return c[i].at < c[j].at }
func (c completions) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c *completions) Push(x any)        { *c = append(*c, x.(completion)) }
func (c *completions) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}

// Run plays the publish times through the model, asking sizer every poll
// interval. Time is virtual; the run continues after the trace until every
// event completed. ages receives each event's age (nil: not kept).
func Run(tr Trace, publish []float64, sizer Sizer, poll float64, seed uint64, ages *[]float64) (Result, error) {
	if poll <= 0 {
		return Result{}, fmt.Errorf("poll interval must be above 0, got %v", poll)
	}
	if tr.Model.Concurrency < 1 {
		return Result{}, fmt.Errorf("trace %s: concurrency must be 1 or more, got %d", tr.Name, tr.Model.Concurrency)
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	epoch := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var (
		queue    []float64 // publish times waiting, FIFO from head
		head     int
		next     int // next publish index
		inflight int
		insts    []*instance
		done     completions
		res      Result
		ageList  []float64
		warmAges []float64
		now      float64
		nextPoll = poll
		lastT    float64
	)
	running := func() int { // the count the scaler set
		n := 0
		for _, in := range insts {
			if !in.stopping {
				n++
			}
		}
		return n
	}
	live := func() int { // what costs: starting, working, stopping
		n := 0
		for _, in := range insts {
			if !in.gone {
				n++
			}
		}
		return n
	}
	dispatch := func() {
		for _, in := range insts {
			for !in.stopping && in.ready <= now && in.busy < tr.Model.Concurrency && head < len(queue) {
				p := queue[head]
				head++
				in.busy++
				inflight++
				mean := float64(tr.Model.Concurrency) / tr.Model.Rate(now)
				heap.Push(&done, completion{at: now + rng.ExpFloat64()*mean, publish: p, inst: in})
			}
		}
		if head > 4096 && head*2 > len(queue) {
			queue = append(queue[:0], queue[head:]...)
			head = 0
		}
	}
	for {
		if next == len(publish) && inflight == 0 && head == len(queue) && now >= tr.Seconds {
			break
		}
		if now > 10*tr.Seconds+3600 {
			return res, fmt.Errorf("trace %s: %d events still queued long after the trace ended", tr.Name, len(queue)-head+inflight)
		}
		// The next thing to happen: a publish, a completion, an instance
		// becoming ready, or a poll.
		t, kind := nextPoll, 0
		if next < len(publish) && publish[next] < t {
			t, kind = publish[next], 1
		}
		if len(done) > 0 && done[0].at < t {
			t, kind = done[0].at, 2
		}
		for _, in := range insts {
			if !in.stopping && in.ready > now && in.ready < t {
				t, kind = in.ready, 3
			}
		}
		res.InstanceSeconds += float64(live()) * (t - lastT)
		lastT, now = t, t
		switch kind {
		case 0:
			nextPoll += poll
			lag := int64(len(queue)-head) + int64(inflight)
			want := sizer.Size(epoch.Add(time.Duration(now*float64(time.Second))), lag, int64(inflight), int64(next), running())
			cur := running()
			for ; cur < want; cur++ {
				insts = append(insts, &instance{ready: now + tr.Model.Startup})
			}
			// Scale down: starting ones first, then the least busy.
			for cur > want {
				var pick *instance
				score := func(in *instance) int {
					if in.ready > now {
						return -1 // still starting
					}
					return in.busy
				}
				for _, in := range insts {
					if !in.stopping && (pick == nil || score(in) < score(pick)) {
						pick = in
					}
				}
				pick.stopping = true
				cur--
			}
		case 1:
			queue = append(queue, publish[next])
			next++
		case 2:
			c := heap.Pop(&done).(completion)
			c.inst.busy--
			inflight--
			age := now - c.publish
			if age < 0 {
				return res, fmt.Errorf("event published at %.3f completed at %.3f", c.publish, now)
			}
			ageList = append(ageList, age)
			if c.publish >= Warm {
				warmAges = append(warmAges, age)
			}
		}
		for _, in := range insts {
			if in.stopping && in.busy == 0 {
				in.gone = true
			}
		}
		insts = slices.DeleteFunc(insts, func(in *instance) bool { return in.gone })
		res.PeakInstances = max(res.PeakInstances, live())
		dispatch()
	}
	res.Events = len(ageList)
	if res.Events != len(publish) {
		return res, fmt.Errorf("%d events published, %d completed", len(publish), res.Events)
	}
	if ages != nil {
		*ages = append((*ages)[:0], ageList...)
	}
	slices.Sort(ageList)
	res.P50, res.P99 = quantile(ageList, 0.50), quantile(ageList, 0.99)
	res.MaxAge = quantile(ageList, 1)
	slices.Sort(warmAges)
	res.WarmP99 = quantile(warmAges, 0.99)
	return res, nil
}

// quantile is the nearest-rank q-quantile of sorted xs (0 when empty).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[max(int(math.Ceil(q*float64(len(xs))))-1, 0)]
}

// Fixed runs a constant count from t = 0. Run with max-instances it is the
// floor of every trace: no policy has more instances, or has them sooner.
type Fixed int

func (f Fixed) Size(time.Time, int64, int64, int64, int) int { return int(f) }

// HotTopic is the real policy, fed as scaler.go feeds it.
type HotTopic struct {
	S mapping.Settings
	p scaler.Policy
}

func (h *HotTopic) Size(now time.Time, lag, inFlight, arrived int64, running int) int {
	h.p.ObserveFlow(now, lag, scaler.Flow{Arrived: arrived, InFlight: inFlight}, h.S)
	return h.p.Decide(now, running, h.S).Target
}

// LagOnly is the real policy fed the lag alone (as before issue 14).
type LagOnly struct {
	S mapping.Settings
	p scaler.Policy
}

func (h *LagOnly) Size(now time.Time, lag, _, _ int64, running int) int {
	h.p.Observe(now, lag, h.S)
	return h.p.Decide(now, running, h.S).Target
}

// KEDA is the baseline: desired = ceil(lag / threshold) clamped to min and
// max (at least 1 with any lag), up at once, down to the highest desired of
// the last Stabilisation (HPA's scale-down stabilisation window; also
// KEDA's cool-down before zero).
type KEDA struct {
	Threshold, Min, Max int
	Stabilisation       time.Duration
	hist                []kedaSample
}

type kedaSample struct {
	at   time.Time
	want int
}

func (k *KEDA) Size(now time.Time, lag, _, _ int64, running int) int {
	want := 0
	if lag > 0 {
		want = max(1, int((lag+int64(k.Threshold)-1)/int64(k.Threshold)))
	}
	want = min(max(want, k.Min), k.Max)
	k.hist = append(k.hist, kedaSample{now, want})
	for len(k.hist) > 1 && !k.hist[0].at.After(now.Add(-k.Stabilisation)) {
		k.hist = k.hist[1:]
	}
	if want >= running {
		return want
	}
	peak := 0
	for _, h := range k.hist {
		peak = max(peak, h.want)
	}
	return min(peak, running)
}
