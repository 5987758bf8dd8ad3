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
			{"KEDA-like", &KEDA{Threshold: s.LagPerInstance, Min: s.MinInstances, Max: s.MaxInstances, Stabilisation: 300 * time.Second}},
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

// Medians is, cell by cell, the median of several tables of the same rows.
func Medians(tables [][]Row) []Row {
	out := slices.Clone(tables[0])
	for i := range out {
		col := func(f func(Row) float64) float64 {
			xs := make([]float64, len(tables))
			for j, t := range tables {
				xs[j] = f(t[i])
			}
			slices.Sort(xs)
			return xs[(len(xs)-1)/2]
		}
		r := &out[i]
		r.Events = int(col(func(x Row) float64 { return float64(x.Events) }))
		r.P50 = col(func(x Row) float64 { return x.P50 })
		r.P99 = col(func(x Row) float64 { return x.P99 })
		r.MaxAge = col(func(x Row) float64 { return x.MaxAge })
		r.WarmP99 = col(func(x Row) float64 { return x.WarmP99 })
		r.InstanceSeconds = col(func(x Row) float64 { return x.InstanceSeconds })
		r.PeakInstances = int(col(func(x Row) float64 { return float64(x.PeakInstances) }))
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
	for i := range *runs {
		rows, err := Table(*seed+uint64(i), *poll, *startup)
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
	return tw.Flush()
}
