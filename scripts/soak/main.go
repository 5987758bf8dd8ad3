// Command soak is what scripts/soak.sh runs: `hottopic dev --cluster` on an
// example manifest for a bounded time under a steady and a bursty load, with
// faults on a schedule (SIGKILL a NATS node, which the runtime starts again;
// SIGKILL an app instance, which the runtime restarts), sampling RSS, open
// file descriptors and goroutines of every process. At the end it prints
// lost and duplicated events (deliveries counted by ce-id from the app's
// output lines) and a min/max/last table per process. Loopback only.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/dev"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/topic"
)

type config struct {
	hottopic, manifest, dir, app, topic string
	duration, burstEvery, faultEvery    time.Duration
	sample, warmup                      time.Duration
	rate, burst                         int
}

func main() {
	var c config
	var minutes float64
	flag.StringVar(&c.hottopic, "hottopic", "", "the hottopic binary")
	flag.StringVar(&c.manifest, "f", "examples/wordcount/manifest.yml", "manifest")
	flag.StringVar(&c.app, "app", "wordcount", "the mapped app whose deliveries are counted")
	flag.StringVar(&c.topic, "topic", "words", "its topic")
	flag.StringVar(&c.dir, "dir", "", "work directory (data dir, logs, samples.csv)")
	flag.Float64Var(&minutes, "minutes", 10, "load and faults last this long")
	flag.IntVar(&c.rate, "rate", 20, "steady load, events per second")
	flag.IntVar(&c.burst, "burst", 400, "events per burst")
	flag.DurationVar(&c.burstEvery, "burst-every", 45*time.Second, "time between bursts")
	flag.DurationVar(&c.faultEvery, "fault-every", 40*time.Second, "time between faults (node kill and app kill in turn)")
	flag.DurationVar(&c.sample, "sample", 5*time.Second, "sampling interval")
	report := flag.String("table", "", "print the table of an earlier run's samples.csv and exit")
	flag.Parse()
	c.duration = time.Duration(minutes * float64(time.Minute))
	c.warmup = min(2*time.Minute, c.duration/5)
	if *report != "" {
		if err := table(*report, c.warmup); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

var deliveryLine = regexp.MustCompile(`\bevent (\S+) \(delivery (\d+)\)`)

// deliveries counts the app's deliveries by ce-id from the dev output.
type deliveries struct {
	mu    sync.Mutex
	seen  map[string]int
	retry int // lines with a delivery attempt > 1
	ready chan struct{}
	once  sync.Once
}

func (d *deliveries) scan(r io.Reader, log io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(log, line)
		if strings.Contains(line, "[HOTTOPIC/DEV] ready:") {
			d.once.Do(func() { close(d.ready) })
		}
		if m := deliveryLine.FindStringSubmatch(line); m != nil {
			d.mu.Lock()
			d.seen[m[1]]++
			if m[2] != "1" {
				d.retry++
			}
			d.mu.Unlock()
		}
	}
}

func (d *deliveries) count(ids []string) (delivered, dups int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		if n := d.seen[id]; n > 0 {
			delivered++
			dups += n - 1
		}
	}
	return
}

func run(ctx context.Context, c config) error {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	port, err := threeFreePorts()
	if err != nil {
		return err
	}
	data := filepath.Join(c.dir, "data")
	logf, err := os.Create(filepath.Join(c.dir, "dev.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.hottopic, "dev", "--cluster", "-f", c.manifest, "--data-dir", data, "--nats-port", strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	d := &deliveries{seen: map[string]int{}, ready: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return err
	}
	devPID := cmd.Process.Pid
	scanned := make(chan struct{})
	go func() { d.scan(out, logf); close(scanned) }()
	exited := make(chan struct{})
	go func() { <-scanned; _ = cmd.Wait(); close(exited) }()
	// Whatever happens, stop everything that was started: Ctrl-C to hottopic
	// dev (it stops its scaler, sidecars, apps and nodes), then SIGKILL to
	// every descendant still there.
	defer func() {
		known := descendants(devPID)
		_ = syscall.Kill(devPID, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			fmt.Println("soak: hottopic dev did not stop within 30s; killing it")
		}
		_ = syscall.Kill(-devPID, syscall.SIGKILL)
		for pid := range known {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		<-exited
	}()
	fmt.Printf("soak: hottopic dev --cluster (pid %d) on 127.0.0.1:%d-%d, output in %s\n", devPID, port, port+2, logf.Name())
	select {
	case <-d.ready:
	case <-exited:
		return fmt.Errorf("hottopic dev exited before ready; see %s", logf.Name())
	case <-time.After(3 * time.Minute):
		return fmt.Errorf("hottopic dev not ready after 3 min; see %s", logf.Name())
	case <-ctx.Done():
		return ctx.Err()
	}
	st, err := state.Read(data)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(st.NATSURL, nats.Name("soak"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	s := &sampler{scalerURL: st.ScalerURL, rows: map[string]*row{}}
	csv, err := os.Create(filepath.Join(c.dir, "samples.csv"))
	if err != nil {
		return err
	}
	defer csv.Close()
	fmt.Fprintln(csv, "seconds,process,pid,rss_kb,fds,goroutines")
	start := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, c.duration)
	defer stopLoad()
	var wg sync.WaitGroup
	var pubMu sync.Mutex
	var ids []string
	var steady, bursts int
	publish := func(id string) error {
		msg := nats.NewMsg(c.topic)
		msg.Data = []byte("soak event " + id)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := js.PublishMsg(pctx, msg)
			cancel()
			if err == nil {
				pubMu.Lock()
				ids = append(ids, id)
				pubMu.Unlock()
				return nil
			}
			if attempt == 300 || ctx.Err() != nil {
				return fmt.Errorf("event %s not stored: %v", id, err)
			}
			time.Sleep(100 * time.Millisecond) // back-off between publish retries
		}
	}
	var pubErr error
	var errOnce sync.Once
	fail := func(err error) { errOnce.Do(func() { pubErr = err; fmt.Println("soak:", err) }) }
	wg.Add(3)
	go func() { // steady
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(c.rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			if err := publish(fmt.Sprintf("s-%d", i)); err != nil {
				fail(err)
				return
			}
			steady++
		}
	}()
	go func() { // bursts: c.burst events as fast as acknowledgements come
		defer wg.Done()
		tick := time.NewTicker(c.burstEvery)
		defer tick.Stop()
		for b := 0; ; b++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			fmt.Printf("soak: %5.0fs burst %d: %d events\n", time.Since(start).Seconds(), b, c.burst)
			for i := range c.burst {
				if err := publish(fmt.Sprintf("b%d-%d", b, i)); err != nil {
					fail(err)
					return
				}
				bursts++
			}
		}
	}()
	go func() { // faults
		defer wg.Done()
		tick := time.NewTicker(c.faultEvery)
		defer tick.Stop()
		for k := 0; ; k++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			fmt.Printf("soak: %5.0fs fault %d: %s\n", time.Since(start).Seconds(), k, fault(devPID, k, c.app))
		}
	}()
	sampleTick := time.NewTicker(c.sample)
	defer sampleTick.Stop()
	s.take(devPID, time.Since(start), csv)
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()
sampling:
	for {
		select {
		case <-sampleTick.C:
			s.take(devPID, time.Since(start), csv)
		case <-loadDone:
			break sampling
		case <-exited:
			return fmt.Errorf("hottopic dev exited; see %s", logf.Name())
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted")
	}
	fmt.Printf("soak: %5.0fs load and faults over; waiting for every event to be delivered and the consumer to settle (3 min at most)\n", time.Since(start).Seconds())
	consumer := topic.ConsumerName(dev.AppGUID(c.app))
	stream := topic.StreamName(c.topic)
	settleBy := time.Now().Add(3 * time.Minute)
	for time.Now().Before(settleBy) && ctx.Err() == nil {
		d1, _ := d.count(ids)
		if d1 == len(ids) && settled(js, stream, consumer) {
			break
		}
		select {
		case <-sampleTick.C:
			s.take(devPID, time.Since(start), csv)
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond): // polling the app's counts: nothing to await
		}
	}
	s.take(devPID, time.Since(start), csv)
	delivered, dups := d.count(ids)
	d.mu.Lock()
	retries := d.retry
	d.mu.Unlock()
	fmt.Printf("\nsoak: %s of load (%d steady at %d/s, %d in bursts of %d every %s), faults every %s, %s in all\n",
		c.duration, steady, c.rate, bursts, c.burst, c.burstEvery, c.faultEvery, time.Since(start).Round(time.Second))
	fmt.Printf("published %d, delivered %d, lost %d, duplicated %d (deliveries with Hottopic-Delivery > 1: %d)\n\n",
		len(ids), delivered, len(ids)-delivered, dups, retries)
	s.print(c.warmup, time.Since(start))
	if pubErr != nil {
		return pubErr
	}
	if delivered != len(ids) {
		return fmt.Errorf("%d events lost", len(ids)-delivered)
	}
	return nil
}

func settled(js jetstream.JetStream, stream, consumer string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return false
	}
	i := cons.CachedInfo()
	return i.NumPending == 0 && i.NumAckPending == 0
}

// fault k: even k SIGKILLs a NATS node (n1, n2, n3 in turn), odd k an
// instance of the app (its app process; the runtime restarts it).
func fault(devPID, k int, app string) string {
	procs := descendants(devPID)
	if k%2 == 0 {
		node := fmt.Sprintf("n%d", (k/2)%3+1)
		for pid, p := range procs {
			if p.role == "nats "+node {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				return fmt.Sprintf("SIGKILL NATS node %s (pid %d)", node, pid)
			}
		}
		return "node " + node + " not running: nothing killed"
	}
	var pids []int
	for pid, p := range procs {
		if strings.HasPrefix(p.role, app+"/") {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return "no instance of " + app + " running (scaled to zero): nothing killed"
	}
	sort.Ints(pids)
	pid := pids[0]
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Sprintf("SIGKILL %s (pid %d)", procs[pid].role, pid)
}

type proc struct {
	role   string
	listen string // a sidecar's API address, for /metrics
}

// descendants lists the processes below pid (and pid itself), with a role
// from their command line and environment.
func descendants(root int) map[int]proc {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		parent[pid], _ = strconv.Atoi(f[1])
	}
	out := map[int]proc{}
	for pid := range parent {
		for p := pid; p > 1; p = parent[p] {
			if p == root {
				out[pid] = describe(pid, root)
				break
			}
		}
	}
	return out
}

func describe(pid, root int) proc {
	if pid == root {
		return proc{role: "hottopic dev"}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	env := map[string]string{}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil {
		for _, kv := range strings.Split(string(b), "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
	}
	for i, a := range args {
		if a == "nats-node" {
			for _, b := range args[i:] {
				if strings.HasSuffix(b, "nats.conf") {
					return proc{role: "nats " + filepath.Base(filepath.Dir(b))}
				}
			}
			return proc{role: "nats ?"}
		}
		if a == "sidecar" && i == 1 {
			return proc{role: fmt.Sprintf("sidecar/%s", env["CF_INSTANCE_INDEX"]), listen: env["HOTTOPIC_LISTEN"]}
		}
	}
	name := filepath.Base(args[0])
	var app string
	if va := env["VCAP_APPLICATION"]; va != "" {
		if m := regexp.MustCompile(`"application_name":"([^"]*)"`).FindStringSubmatch(va); m != nil {
			app = m[1]
		}
	}
	if app != "" {
		return proc{role: fmt.Sprintf("%s/%s (%s)", app, env["CF_INSTANCE_INDEX"], name)}
	}
	return proc{role: name}
}

type sample struct {
	at                   time.Duration
	rssKB, fds, goroutes int
}

type row struct {
	role    string
	pid     int
	samples []sample
}

type sampler struct {
	scalerURL string
	rows      map[string]*row
}

func (s *sampler) take(devPID int, at time.Duration, csv io.Writer) {
	for pid, p := range descendants(devPID) {
		rss := statusKB(pid, "VmRSS:")
		if rss < 0 {
			continue
		}
		fds := -1
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			fds = len(ents)
		}
		g := -1
		switch {
		case pid == devPID:
			g = goroutines(s.scalerURL + "/metrics")
		case p.listen != "":
			g = goroutines("http://" + p.listen + "/metrics")
		}
		key := fmt.Sprintf("%s %d", p.role, pid)
		r := s.rows[key]
		if r == nil {
			r = &row{role: p.role, pid: pid}
			s.rows[key] = r
		}
		r.samples = append(r.samples, sample{at, rss, fds, g})
		fmt.Fprintf(csv, "%.1f,%s,%d,%d,%d,%d\n", at.Seconds(), p.role, pid, rss, fds, g)
	}
}

func statusKB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return -1
}

var httpc = &http.Client{Timeout: 2 * time.Second}

func goroutines(u string) int {
	resp, err := httpc.Get(u)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

// print the table: per process (instances restarted or scaled out and in
// are one row per role: their processes' samples together), min/max/last of
// RSS, fds and goroutines, and the largest RSS after warm-up in the first and
// in the second half of the run (growth shows as a second larger than the
// first).
func (s *sampler) print(warmup, end time.Duration) {
	byRole := map[string][]*row{}
	var roles []string
	short := 0
	for _, r := range s.rows {
		if len(r.samples) < 3 { // a launcher shell before it execs the app, a process that just started
			short++
			continue
		}
		if byRole[r.role] == nil {
			roles = append(roles, r.role)
		}
		byRole[r.role] = append(byRole[r.role], r)
	}
	sort.Strings(roles)
	half := warmup + (end-warmup)/2
	fmt.Printf("RSS in MB, open fds and goroutines (g) per process, min/max/last over every sample; a role's restarted or\n")
	fmt.Printf("re-scaled instances share a row (procs: how many); warm-up %s; max RSS after warm-up in the first and second half\n", warmup)
	fmt.Printf("%-24s %5s %7s %22s %15s %12s %12s\n", "process", "procs", "samples", "RSS min/max/last", "max RSS 1st/2nd", "fds", "g")
	for _, role := range roles {
		rs := byRole[role]
		var all []sample
		for _, r := range rs {
			all = append(all, r.samples...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].at < all[j].at })
		last := all[len(all)-1]
		mm := func(f func(sample) int) (lo, hi int) {
			lo, hi = f(all[0]), f(all[0])
			for _, x := range all {
				lo, hi = min(lo, f(x)), max(hi, f(x))
			}
			return
		}
		rl, rh := mm(func(x sample) int { return x.rssKB })
		fl, fh := mm(func(x sample) int { return x.fds })
		gl, gh := mm(func(x sample) int { return x.goroutes })
		h1, h2 := -1, -1
		for _, x := range all {
			switch {
			case x.at < warmup:
			case x.at < half:
				h1 = max(h1, x.rssKB)
			default:
				h2 = max(h2, x.rssKB)
			}
		}
		mb := func(kb int) string {
			if kb < 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", float64(kb)/1024)
		}
		g := "-"
		if gh >= 0 {
			g = fmt.Sprintf("%d/%d/%d", gl, gh, last.goroutes)
		}
		fmt.Printf("%-24s %5d %7d %6.1f/%6.1f/%6.1f %15s %12s %12s\n", role, len(rs), len(all),
			float64(rl)/1024, float64(rh)/1024, float64(last.rssKB)/1024, mb(h1)+"/"+mb(h2),
			fmt.Sprintf("%d/%d/%d", fl, fh, last.fds), g)
	}
	fmt.Printf("(not shown: %d processes seen in fewer than 3 samples; every sample is in samples.csv)\n", short)
}

// table prints the table of a samples.csv.
func table(path string, warmup time.Duration) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := &sampler{rows: map[string]*row{}}
	var end time.Duration
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n")[1:] {
		f := strings.Split(l, ",")
		if len(f) != 6 {
			continue
		}
		sec, _ := strconv.ParseFloat(f[0], 64)
		pid, _ := strconv.Atoi(f[2])
		rss, _ := strconv.Atoi(f[3])
		fds, _ := strconv.Atoi(f[4])
		g, _ := strconv.Atoi(f[5])
		key := f[1] + " " + f[2]
		if s.rows[key] == nil {
			s.rows[key] = &row{role: f[1], pid: pid}
		}
		at := time.Duration(sec * float64(time.Second))
		s.rows[key].samples = append(s.rows[key].samples, sample{at, rss, fds, g})
		end = max(end, at)
	}
	s.print(warmup, end)
	return nil
}

// threeFreePorts finds a base port with it and the next two free on
// 127.0.0.1 (hottopic dev --cluster takes --nats-port and the two after).
func threeFreePorts() (int, error) {
	for try := 0; try < 50; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for i := 0; i < 3 && ok; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok && base+2 < 65536 {
			return base, nil
		}
	}
	return 0, errors.New("no three consecutive free loopback ports")
}
