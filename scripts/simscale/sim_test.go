package main

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestModelCompletesEveryEventOnce(t *testing.T) {
	for _, tr := range Traces(5) {
		pub := Arrivals(tr, 7)
		if !slices.IsSorted(pub) || len(pub) == 0 {
			t.Fatalf("%s: publish times not sorted or empty (%d)", tr.Name, len(pub))
		}
		var ages []float64
		r, err := Run(tr, pub, &HotTopic{S: Settings()}, 1, 7, &ages)
		if err != nil {
			t.Fatal(err)
		}
		if r.Events != len(pub) || len(ages) != len(pub) {
			t.Fatalf("%s: %d published, %d completed, %d ages", tr.Name, len(pub), r.Events, len(ages))
		}
		for _, a := range ages {
			if a < 0 || math.IsNaN(a) {
				t.Fatalf("%s: age %v", tr.Name, a)
			}
		}
		if r.P50 > r.P99 || r.P99 > r.MaxAge || r.InstanceSeconds <= 0 {
			t.Fatalf("%s: p50 %v p99 %v max %v instance-s %v", tr.Name, r.P50, r.P99, r.MaxAge, r.InstanceSeconds)
		}
	}
}

func TestModelRatesAndStartup(t *testing.T) {
	// 5 instances at 10/s each drain 1 000 events published at once in
	// 20 s after a 5 s start-up: the last is about 25 s old, and the
	// instances cost 5 × 25 instance-seconds.
	tr := Trace{Name: "block", Seconds: 1e-3, Model: Model{Startup: 5, Concurrency: 1, Rate: func(float64) float64 { return 10 }}}
	pub := make([]float64, 1000)
	r, err := Run(tr, pub, Fixed(5), 1, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxAge < 23 || r.MaxAge > 27 {
		t.Fatalf("last event %.2f s old, want about 25", r.MaxAge)
	}
	if r.InstanceSeconds < 5*23 || r.InstanceSeconds > 5*27 {
		t.Fatalf("%.1f instance-seconds, want about 125", r.InstanceSeconds)
	}
	// Concurrency 4 at the same per-instance rate takes as long.
	tr.Model.Concurrency = 4
	r4, err := Run(tr, pub, Fixed(5), 1, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r4.MaxAge-r.MaxAge) > 3 {
		t.Fatalf("concurrency 4: last event %.2f s old, concurrency 1: %.2f", r4.MaxAge, r.MaxAge)
	}
}

func TestModelIsDeterministic(t *testing.T) {
	tr := Traces(5)[3]
	var runs [2]Result
	for i := range runs {
		r, err := Run(tr, Arrivals(tr, 3), &HotTopic{S: Settings()}, 1, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		runs[i] = r
	}
	if runs[0] != runs[1] {
		t.Fatalf("two runs with the same seed differ: %+v, %+v", runs[0], runs[1])
	}
}

func TestKEDAHoldsForTheStabilisationWindow(t *testing.T) {
	k := &KEDA{Threshold: 10, Max: 50, Stabilisation: 300 * time.Second}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if n := k.Size(t0, 95, 0, 0, 0); n != 10 {
		t.Fatalf("lag 95 at threshold 10: %d, want 10", n)
	}
	if n := k.Size(t0.Add(299*time.Second), 0, 0, 0, 10); n != 10 {
		t.Fatalf("after 299 s: %d, want 10", n)
	}
	if n := k.Size(t0.Add(300*time.Second), 0, 0, 0, 10); n != 0 {
		t.Fatalf("after 300 s: %d, want 0", n)
	}
}

func TestStillTooBusyIsAnError(t *testing.T) {
	tr := Trace{Name: "stuck", Seconds: 1, Model: Model{Concurrency: 1, Rate: func(float64) float64 { return 10 }}}
	_, err := Run(tr, []float64{0.5}, Fixed(0), 1, 1, nil)
	if err == nil || !strings.Contains(err.Error(), "1 events still queued") {
		t.Fatalf("got %v", err)
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-h"}, &out); err != nil || !strings.HasPrefix(out.String(), "Usage: go run ./scripts/simscale") {
		t.Fatalf("-h: %v, %q", err, out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for args, want := range map[string]string{
		"-poll 0":      "-poll must be above 0, got 0s",
		"-startup -1s": "-startup must be 0 or more, got -1s",
		"extra":        `unexpected argument "extra"`,
		"-runs 0":      "-runs must be 1 or more, got 0",
	} {
		err := run(strings.Fields(args), &bytes.Buffer{})
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %s", args, err, want)
		}
	}
}

func TestBounds(t *testing.T) {
	bounds, err := Bounds([]uint64{1}, time.Second, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Bound{}
	for _, b := range bounds {
		byName[strings.Fields(b.Trace)[0]] = b
		if b.Floor > b.KEDAP99 {
			t.Errorf("%s: floor p99 %.2f above the baseline's %.2f", b.Trace, b.Floor, b.KEDAP99)
		}
		if b.MinInstances >= 0 && b.P99 > b.KEDAP99/2 {
			t.Errorf("%s: min-instances %d gives p99 %.2f, above half of %.2f", b.Trace, b.MinInstances, b.P99, b.KEDAP99)
		}
	}
	// Steady arrivals need no warm pool; a burst at t = 0 from zero
	// instances is beyond every policy; a one-off burst needs one.
	if b := byName["steady"]; b.MinInstances != 0 {
		t.Errorf("steady: min-instances %d, want 0", b.MinInstances)
	}
	if b := byName["burst"]; b.MinInstances != -1 || b.Floor <= b.KEDAP99/2 {
		t.Errorf("burst every minute: min-instances %d, floor %.2f, baseline %.2f; want none, floor above half", b.MinInstances, b.Floor, b.KEDAP99)
	}
	if b := byName["×20"]; b.MinInstances < 1 {
		t.Errorf("×20 burst: min-instances %d, want a warm pool", b.MinInstances)
	}
}
