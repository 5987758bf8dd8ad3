// Command simscale plays arrival traces through a model of app instances,
// sized by the real scaling policy (scaler.Policy fed lag and flow, as the
// scaler feeds it) and, on the same traces, by the policy fed lag alone and
// by a KEDA-like baseline. It prints, per trace and policy, p50/p99 event age
// (publish to completion) and instance-seconds. Virtual time, seeded: the
// same table every run.
//
// Usage: go run ./scripts/simscale [-seed N] [-runs 3] [-poll 1s] [-startup 5s]
//
// With -runs N every figure is the median of N runs with seeds seed, seed+1, ….
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/hottopic-io/hottopic/internal/mapping"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "simscale:", err)
		os.Exit(2)
	}
}

// Settings is the mapping every trace runs with: the defaults, up to 50
// instances.
func Settings() mapping.Settings {
	s := mapping.Defaults()
	s.MaxInstances = 50
	return s
}

// Traces are the five, 30 minutes each; startup is each instance's
// start-up delay. One instance completes 10 events/s (100 ms each, one in
// flight) unless the trace says otherwise.
func Traces(startup float64) []Trace {
	steady := func(float64) float64 { return 10 }
	m := Model{Startup: startup, Concurrency: 1, Rate: steady}
	const T = 1800.0
	return []Trace{
		{Name: "steady 85/s", Seconds: T, PeakRate: 85, Model: m,
			Arrivals: func(float64) float64 { return 85 }},
		{Name: "diurnal 5–95/s", Seconds: T, PeakRate: 95, Model: m,
			Arrivals: func(t float64) float64 { return 50 - 45*math.Cos(2*math.Pi*t/T) }},
		{Name: "×20 burst 10→200/s 60 s", Seconds: T, PeakRate: 200, Model: m,
			Arrivals: func(t float64) float64 {
				if t >= 600 && t < 660 {
					return 200
				}
				return 10
			}},
		{Name: "burst every minute 5/s + 300 in 2 s", Seconds: T, PeakRate: 155, Model: m,
			Arrivals: func(t float64) float64 {
				if math.Mod(t, 60) < 2 {
					return 155
				}
				return 5
			}},
		{Name: "slow consumer 40/s, 10→4/s per instance", Seconds: T, PeakRate: 40,
			Model: Model{Startup: startup, Concurrency: 1, Rate: func(t float64) float64 {
				if t >= 600 {
					return 4
				}
				return 10
			}},
			Arrivals: func(float64) float64 { return 40 }},
	}
}

// Row is one trace under one policy.
type Row struct {
	Trace, Policy string
	Result
}

// Table runs every trace under the three policies.
func Table(seed uint64, poll, startup time.Duration) ([]Row, error) {
	s := Settings()
	var rows []Row
	for i, tr := range Traces(startup.Seconds()) {
		pub := Arrivals(tr, seed+uint64(i))
		for _, p := range []struct {
			name string
			sz   Sizer
		}{
			{"hot topic", &HotTopic{S: s}},
			{"lag only", &LagOnly{S: s}},
			{"KEDA-like", kedaLike(s)},
		} {
			r, err := Run(tr, pub, p.sz, poll.Seconds(), seed+uint64(i), nil)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", tr.Name, p.name, err)
			}
			rows = append(rows, Row{tr.Name, p.name, r})
		}
	}
	return rows, nil
}

// kedaLike is the baseline for the mapping s: its lag-per-instance as the
// threshold, its bounds, HPA's 300 s scale-down stabilisation.
func kedaLike(s mapping.Settings) *KEDA {
	return &KEDA{Threshold: s.LagPerInstance, Min: s.MinInstances, Max: s.MaxInstances, Stabilisation: 300 * time.Second}
}

// Bound is, for one trace, what the goal (p99 age ≤ 50 % of the KEDA-like
// baseline's at no more instance-seconds) would take: Floor is the p99 with
// every instance running from t = 0, which no policy beats; MinInstances is
// the smallest min-instances (the user's warm pool) at which the real policy
// reaches half the baseline's p99 (-1: none up to max-instances), with its
// p99 and its instance-seconds as a share of the baseline's. Medians over the
// seeds.
type Bound struct {
	Trace          string
	KEDAP99, Floor float64
	MinInstances   int
	P99, CostShare float64
}

// Bounds finds each trace's Bound over the given seeds.
func Bounds(seeds []uint64, poll, startup time.Duration) ([]Bound, error) {
	s := Settings()
	var out []Bound
	for i, tr := range Traces(startup.Seconds()) {
		pubs := make([][]float64, len(seeds))
		var keda, floor []Result
		for j, seed := range seeds {
			pubs[j] = Arrivals(tr, seed+uint64(i))
			k, err := Run(tr, pubs[j], kedaLike(s), poll.Seconds(), seed+uint64(i), nil)
			if err != nil {
				return nil, fmt.Errorf("%s, KEDA-like: %w", tr.Name, err)
			}
			f, err := Run(tr, pubs[j], Fixed(s.MaxInstances), poll.Seconds(), seed+uint64(i), nil)
			if err != nil {
				return nil, fmt.Errorf("%s, floor: %w", tr.Name, err)
			}
			keda, floor = append(keda, k), append(floor, f)
		}
		b := Bound{Trace: tr.Name, KEDAP99: median(keda, p99), Floor: median(floor, p99), MinInstances: -1}
		kedaCost := median(keda, cost)
		for w := s.MinInstances; w <= s.MaxInstances && b.Floor <= b.KEDAP99/2; w++ {
			ws := s
			ws.MinInstances = w
			var hot []Result
			for j, seed := range seeds {
				r, err := Run(tr, pubs[j], &HotTopic{S: ws}, poll.Seconds(), seed+uint64(i), nil)
				if err != nil {
					return nil, fmt.Errorf("%s, hot topic with min-instances %d: %w", tr.Name, w, err)
				}
				hot = append(hot, r)
			}
			if p := median(hot, p99); p <= b.KEDAP99/2 {
				b.MinInstances, b.P99, b.CostShare = w, p, median(hot, cost)/kedaCost
				break
			}
		}
		out = append(out, b)
	}
	return out, nil
}

func p99(r Result) float64  { return r.P99 }
func cost(r Result) float64 { return r.InstanceSeconds }

// median is the median of f over rs (the lower one of an even count).
func median(rs []Result, f func(Result) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	slices.Sort(xs)
	return xs[(len(xs)-1)/2]
}

// Medians is, cell by cell, the median of several tables of the same rows.
func Medians(tables [][]Row) []Row {
	out := slices.Clone(tables[0])
	for i := range out {
		rs := make([]Result, len(tables))
		for j, t := range tables {
			rs[j] = t[i].Result
		}
		r := &out[i]
		r.Events = int(median(rs, func(x Result) float64 { return float64(x.Events) }))
		r.P50 = median(rs, func(x Result) float64 { return x.P50 })
		r.P99 = median(rs, p99)
		r.MaxAge = median(rs, func(x Result) float64 { return x.MaxAge })
		r.WarmP99 = median(rs, func(x Result) float64 { return x.WarmP99 })
		r.InstanceSeconds = median(rs, cost)
		r.PeakInstances = int(median(rs, func(x Result) float64 { return float64(x.PeakInstances) }))
	}
	return out
}

const usage = `Usage: go run ./scripts/simscale [-seed N] [-runs 3] [-poll 1s] [-startup 5s]

Plays five arrival traces through a model of app instances sized by the real
scaling policy, by the policy fed lag alone and by a KEDA-like baseline, and
prints p50/p99 event age and instance-seconds per trace and policy (medians of
-runs seeds). Virtual time: the same table every run.
`

func run(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("simscale", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	seed := fs.Uint64("seed", 1, "random seed")
	runs := fs.Int("runs", 3, "runs (seeds seed, seed+1, …); figures are their medians")
	poll := fs.Duration("poll", time.Second, "poll interval")
	startup := fs.Duration("startup", 5*time.Second, "instance start-up delay")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(w, usage)
			return nil
		}
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case *runs < 1:
		return fmt.Errorf("-runs must be 1 or more, got %d", *runs)
	case *poll <= 0:
		return fmt.Errorf("-poll must be above 0, got %v", *poll)
	case *startup < 0:
		return fmt.Errorf("-startup must be 0 or more, got %v", *startup)
	}
	var all [][]Row
	var seeds []uint64
	for i := range *runs {
		seeds = append(seeds, *seed+uint64(i))
		rows, err := Table(seeds[i], *poll, *startup)
		if err != nil {
			return err
		}
		all = append(all, rows)
	}
	rows := Medians(all)
	s := Settings()
	fmt.Fprintf(w, "medians of %d runs, seeds %d.., poll %v, start-up %v; lag-per-instance %d, idle-seconds %d, instances %d..%d, concurrency %d; KEDA-like: threshold %d, 300 s stabilisation\n\n",
		*runs, *seed, *poll, *startup, s.LagPerInstance, s.IdleSeconds, s.MinInstances, s.MaxInstances, s.Concurrency, s.LagPerInstance)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "trace\tpolicy\tevents\tp50 age s\tp99 age s\tmax age s\tp99 ≥300 s\tinstance-s\tpeak\tp99 vs KEDA\tp99 ≥300 s vs KEDA\tinst-s vs KEDA\t")
	for i, r := range rows {
		k := rows[i-i%3+2] // the trace's KEDA-like row
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%d\t%.0f %%\t%.0f %%\t%.0f %%\t\n", r.Trace, r.Policy, r.Events,
			r.P50, r.P99, r.MaxAge, r.WarmP99, r.InstanceSeconds, r.PeakInstances,
			100*r.P99/k.P99, 100*r.WarmP99/k.WarmP99, 100*r.InstanceSeconds/k.InstanceSeconds)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	bounds, err := Bounds(seeds, *poll, *startup)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwhat p99 ≤ 50 %% of KEDA-like's takes: the floor is every instance (%d) running from t = 0, which no policy beats; then the least min-instances (a warm pool) at which hot topic reaches it, and its cost\n\n", s.MaxInstances)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "trace\tKEDA-like p99 s\tfloor p99 s\tmin-instances\thot topic p99 s\tinst-s vs KEDA\t")
	for _, b := range bounds {
		if b.MinInstances < 0 {
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\tnone: the floor is above half\t\t\t\n", b.Trace, b.KEDAP99, b.Floor)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%d\t%.2f\t%.0f %%\t\n", b.Trace, b.KEDAP99, b.Floor, b.MinInstances, b.P99, 100*b.CostShare)
	}
	return tw.Flush()
}
