// Package benchscaler measures hottopic-scaler as BENCHMARKS.md describes:
// 10 000 mappings, 1 % of them receiving events, NATS API requests and CPU
// per poll cycle, and the time from the first event on an idle mapping to
// the Cloud Controller scale call. It is a test only because the CC double
// lives in a test binary; scripts/bench-scaler.sh runs it (it skips
// otherwise). nats-server and the scaler are separate processes, so their
// CPU is their own.
package benchscaler

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler/api"
)

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func freePort(t *testing.T) int { return proctest.FreePort(t) }

// startProc runs a process in its own group with its output in logf.
func startProc(t *testing.T, logf string, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // after proctest's cleanup has killed the process
	cmd.Stdout, cmd.Stderr = f, f
	return proctest.Start(t, cmd).Cmd
}

// cpu is a process's user+system CPU time from /proc/<pid>/stat.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// The scrape credential the benchmarked scaler is started with.
const scrapeUser, scrapePassword = "bench", "bench-scrape-secret"

// scrape reads the named counters/histogram parts from /metrics.
func scrape(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return out
	}
	req.SetBasicAuth(scrapeUser, scrapePassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if strings.HasPrefix(line, n+" ") {
				v, _ := strconv.ParseFloat(strings.TrimSpace(line[len(n):]), 64)
				out[n] = v
			}
		}
	}
	return out
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func uptime() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return "load " + strings.Join(strings.Fields(string(b))[:3], " ")
}

func TestBenchScaler(t *testing.T) {
	natsBin, scalerBin := os.Getenv("BENCH_NATS_SERVER"), os.Getenv("BENCH_SCALER")
	if natsBin == "" || scalerBin == "" {
		t.Skip("run by scripts/bench-scaler.sh (needs BENCH_NATS_SERVER and BENCH_SCALER)")
	}
	var (
		n        = envInt("MAPPINGS", 10000)
		active   = max(n/100, 1)
		reps     = envInt("RUNS", 3)
		window   = time.Duration(envInt("WINDOW_SECONDS", 20)) * time.Second
		activate = envInt("ACTIVATIONS", 60)
		ctx      = context.Background()
		dir      = t.TempDir()
	)

	// NATS, file storage, its own process.
	np := freePort(t)
	nsrv := startProc(t, filepath.Join(dir, "nats.log"), nil, natsBin, "-a", "127.0.0.1", "-p", strconv.Itoa(np), "-js", "-sd", filepath.Join(dir, "js"))
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", np)
	var nc *nats.Conn
	for i := 0; ; i++ {
		var err error
		if nc, err = nats.Connect(natsURL); err == nil {
			break
		}
		if i > 100 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	// Cloud Controller with n mapped apps at zero instances.
	cc := ccdouble.New(t)
	space := cc.AddSpace(cc.AddOrg("bench"), "bench")
	cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(space))
	guids := make([]string, n)
	topics := make([]string, n)
	for i := range n {
		topics[i] = fmt.Sprintf("bench.t%05d", i)
		guids[i] = cc.AddApp(space, fmt.Sprintf("fn-%05d", i), map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: topics[i]})
		cc.SetInstances(guids[i], "web", 0)
	}

	// Streams, consumers and KV exactly as the scaler would make them, made
	// concurrently so that setup takes minutes, not tens of minutes.
	setup := time.Now()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mapping.Bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var setupErr error
	var emu sync.Mutex
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				m, err := mapping.FromMetadata(guids[i], fmt.Sprintf("fn-%05d", i), map[string]string{mapping.AnnTopics: topics[i]})
				if err == nil {
					_, err = provision.EnsureTopicStream(ctx, js, topics[i], provision.StreamOptions{})
				}
				if err == nil {
					_, err = provision.EnsureConsumer(ctx, js, guids[i], "", topics[i], m.Settings)
				}
				if err == nil {
					var b []byte
					b, _ = m.Encode()
					_, err = kv.Put(ctx, guids[i], b)
				}
				if err != nil {
					emu.Lock()
					setupErr = err
					emu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	t.Logf("setup: %d streams+consumers+keys in %s", n, time.Since(setup).Round(time.Second))

	// Scale calls, as the double records them.
	var (
		smu       sync.Mutex
		scaledAt  = map[string]time.Time{}
		procOwner = map[string]string{}
	)
	for _, g := range guids {
		procOwner[cc.ProcessGUID(g, "web")] = g
	}
	cc.OnCall(func(c ccdouble.Call) {
		parts := strings.Split(strings.Trim(c.Path, "/"), "/")
		if c.Method != http.MethodPost || c.Status != http.StatusAccepted || len(parts) != 5 || parts[1] != "processes" {
			return
		}
		smu.Lock()
		if g := procOwner[parts[2]]; g != "" {
			if _, seen := scaledAt[g]; !seen {
				scaledAt[g] = c.Time
			}
		}
		smu.Unlock()
	})

	// The scaler with its defaults (poll 1 s, discovery 10 s).
	port := freePort(t)
	scaler := startProc(t, filepath.Join(dir, "scaler.log"), []string{
		"CF_API=" + cc.URL(), "CF_CLIENT_ID=hottopic-scaler", "CF_CLIENT_SECRET=s3cret",
		"HOTTOPIC_NATS_URL=" + natsURL, fmt.Sprintf("PORT=%d", port),
		"HOTTOPIC_METRICS_USERNAME=" + scrapeUser, "HOTTOPIC_METRICS_PASSWORD=" + scrapePassword,
	}, scalerBin)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	ready := time.Now()
	// The API shows a token the apps it may see: the scaler's own client sees them all.
	mappingsReq, err := http.NewRequest(http.MethodGet, base+api.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mappingsReq.Header.Set("Authorization", cc.IssueToken("hottopic-scaler", 24*time.Hour))
	for {
		var body api.Mappings
		if resp, err := http.DefaultClient.Do(mappingsReq); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
		}
		known := 0
		for _, m := range body.Mappings {
			if m.LagKnown {
				known++
			}
		}
		if body.Leader && known == n {
			break
		}
		if time.Since(ready) > 5*time.Minute {
			t.Fatalf("scaler not ready: leader=%v, %d/%d mappings with known lag", body.Leader, known, n)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("scaler ready (leader, %d mappings with lag) %s after start", n, time.Since(ready).Round(time.Millisecond))

	// 1 % of the mappings receive events all the time: one per second each,
	// acked by a worker standing in for the app's sidecar.
	stop := make(chan struct{})
	defer close(stop)
	for i := range active {
		c, err := js.Consumer(ctx, topic.StreamName(topics[i]), guids[i])
		if err != nil {
			t.Fatal(err)
		}
		cons, err := c.Consume(func(m jetstream.Msg) { _ = m.Ack() })
		if err != nil {
			t.Fatal(err)
		}
		defer cons.Stop()
	}
	go func() {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				for i := range active {
					_, _ = js.PublishAsync(topics[i], []byte("event"))
				}
			}
		}
	}()
	time.Sleep(3 * time.Second) // let the active set settle into its steady state

	metricsURL := base + "/metrics"
	names := []string{"hottopic_scaler_poll_nats_requests_sum", "hottopic_scaler_poll_nats_requests_count",
		"hottopic_scaler_poll_cpu_seconds_sum", "hottopic_scaler_poll_seconds_sum"}
	next := active
	fmt.Printf("BENCH mappings=%d active=%d window=%s activations=%d\n", n, active, window, activate)
	for rep := 1; rep <= reps; rep++ {
		load := uptime()
		m0, sc0, ns0 := scrape(metricsURL, names...), cpu(scaler.Process.Pid), cpu(nsrv.Process.Pid)
		time.Sleep(window)
		m1, sc1, ns1 := scrape(metricsURL, names...), cpu(scaler.Process.Pid), cpu(nsrv.Process.Pid)
		// Per poll interval (1 s): hint-triggered cycles are counted in.
		intervals := window.Seconds()
		cycles := m1["hottopic_scaler_poll_nats_requests_count"] - m0["hottopic_scaler_poll_nats_requests_count"]
		reqs := (m1["hottopic_scaler_poll_nats_requests_sum"] - m0["hottopic_scaler_poll_nats_requests_sum"]) / intervals
		inCycleCPU := (m1["hottopic_scaler_poll_cpu_seconds_sum"] - m0["hottopic_scaler_poll_cpu_seconds_sum"]) / intervals
		wall := (m1["hottopic_scaler_poll_seconds_sum"] - m0["hottopic_scaler_poll_seconds_sum"]) / cycles
		scCPU := float64(sc1-sc0) / float64(time.Millisecond) / intervals
		nsCPU := float64(ns1-ns0) / float64(time.Millisecond) / intervals

		// Activations: first event on an idle mapping → scale call.
		var lat []time.Duration
		published := map[string]time.Time{}
		for range activate {
			g, tp := guids[next], topics[next]
			next++
			published[g] = time.Now()
			if _, err := js.Publish(ctx, tp, []byte("wake up")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(200+next%7*37) * time.Millisecond) // spread over the poll phase
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			smu.Lock()
			done := 0
			for g := range published {
				if _, ok := scaledAt[g]; ok {
					done++
				}
			}
			smu.Unlock()
			if done == len(published) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		smu.Lock()
		for g, t0 := range published {
			if at, ok := scaledAt[g]; ok {
				lat = append(lat, at.Sub(t0))
			}
		}
		smu.Unlock()
		fmt.Printf("BENCH run=%d %s cycles=%.0f requests_per_interval=%.1f poll_wall_ms=%.1f poll_cpu_ms_per_interval=%.1f scaler_cpu_ms_per_interval=%.1f nats_cpu_ms_per_interval=%.1f activations=%d/%d react_p50_ms=%d react_p99_ms=%d react_max_ms=%d\n",
			rep, load, cycles, reqs, wall*1000, inCycleCPU*1000, scCPU, nsCPU, len(lat), len(published),
			pct(lat, 50).Milliseconds(), pct(lat, 99).Milliseconds(), pct(lat, 100).Milliseconds())
	}
}
