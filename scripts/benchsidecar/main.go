// Command benchsidecar is the helper scripts/bench-sidecar.sh runs as separate
// processes: a no-op app, a publisher, a raw JetStream consumer and an HTTP
// load client; plus `report`, which turns the runs' JSON lines into medians.
// It is a benchmark tool, not part of Hot Topic.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
)

// result is one measurement, one JSON line.
type result struct {
	Name   string  `json:"name"`
	Events int     `json:"events"`
	Secs   float64 `json:"seconds"`
	Rate   float64 `json:"events_per_s"`
	P50us  float64 `json:"p50_us,omitempty"`
	P99us  float64 `json:"p99_us,omitempty"`
	RSSKiB int     `json:"rss_kib,omitempty"`
	// CPU per event, µs, added by the script from /proc/<pid>/stat.
	ServerUS  float64 `json:"server_us,omitempty"`
	SidecarUS float64 `json:"sidecar_us,omitempty"`
	// Read and write system calls per event, from /proc/<pid>/io.
	ServerSys  float64 `json:"server_sys,omitempty"`
	SidecarSys float64 `json:"sidecar_sys,omitempty"`
}

// meter counts receipts: time from the first to the last, and latency from
// the publish timestamp.
type meter struct {
	n     int
	count atomic.Int64
	first atomic.Int64
	last  atomic.Int64
	lat   []int64
	done  chan struct{}
}

func newMeter(n int) *meter { return &meter{n: n, lat: make([]int64, n), done: make(chan struct{})} }

func (m *meter) hit(published time.Time) {
	now := time.Now().UnixNano()
	i := m.count.Add(1)
	if i == 1 {
		m.first.Store(now)
	}
	if int(i) <= m.n {
		if !published.IsZero() {
			m.lat[i-1] = now - published.UnixNano()
		}
		if int(i) == m.n {
			m.last.Store(now)
			close(m.done)
		}
	}
}

func (m *meter) result(name string) result {
	secs := float64(m.last.Load()-m.first.Load()) / 1e9
	r := result{Name: name, Events: m.n, Secs: secs}
	if m.n > 1 && secs > 0 {
		r.Rate = float64(m.n-1) / secs
	}
	lat := append([]int64(nil), m.lat...)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if lat[len(lat)-1] > 0 {
		r.P50us = float64(lat[len(lat)/2]) / 1e3
		r.P99us = float64(lat[len(lat)*99/100]) / 1e3
	}
	return r
}

func emit(r result) { _ = json.NewEncoder(os.Stdout).Encode(r) }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchsidecar app|load|raw|http|report [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var (
		port     = fs.Int("port", 0, "app port")
		n        = fs.Int("n", 100000, "events")
		name     = fs.String("name", "", "result name")
		natsURL  = fs.String("nats", "nats://127.0.0.1:4222", "NATS URL")
		topicF   = fs.String("topic", "bench.events", "topic")
		app      = fs.String("app", "bench-app", "app GUID (consumer name)")
		size     = fs.Int("size", 128, "payload bytes")
		rate     = fs.Int("rate", 0, "publish rate per second (0: as fast as possible)")
		conc     = fs.Int("c", 1, "in flight")
		url      = fs.String("url", "", "HTTP URL")
		timeoutF = fs.Duration("timeout", 5*time.Minute, "give up after")
	)
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "app":
		err = runApp(*port, *n, *name, *timeoutF)
	case "load":
		err = runLoad(*natsURL, *topicF, *app, *n, *size, *rate, *conc)
	case "raw":
		err = runRaw(*natsURL, *topicF, *app, *n, *name, *timeoutF)
	case "http":
		err = runHTTP(*url, *n, *conc, *size)
	case "port": // a free loopback port, for the script
		var l net.Listener
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
			fmt.Println(l.Addr().(*net.TCPAddr).Port)
			_ = l.Close()
		}
	case "report":
		err = report(os.Stdin)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchsidecar:", err)
		os.Exit(1)
	}
}

// runApp is the no-op function app: 200 at once, and a result after n events.
func runApp(port, n int, name string, timeout time.Duration) error {
	m := newMeter(n)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		var pub time.Time
		if v := r.Header.Get("Ce-Time"); v != "" {
			pub, _ = time.Parse(time.RFC3339Nano, v)
		}
		m.hit(pub)
		w.WriteHeader(http.StatusOK)
	})
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(l, h) }()
	select {
	case <-m.done:
	case <-time.After(timeout):
		return fmt.Errorf("app: only %d of %d events after %s", m.count.Load(), n, timeout)
	}
	emit(m.result(name))
	return nil
}

func connect(url string) (jetstream.JetStream, *nats.Conn, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	return js, nc, err
}

// runLoad provisions the topic stream and the app's consumer exactly as the
// sidecar's static mode does, then publishes n events.
func runLoad(url, topic, app string, n, size, rate, conc int) error {
	js, nc, err := connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx := context.Background()
	if _, err := provision.EnsureTopicStream(ctx, js, topic, provision.StreamOptions{}); err != nil {
		return err
	}
	s := mapping.Defaults()
	s.Concurrency = conc
	if _, err := provision.EnsureConsumer(ctx, js, app, "", topic, s); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	payload := bytes.Repeat([]byte("x"), size)
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	for i := 0; i < n; i++ {
		if tick != nil {
			<-tick
		}
		if _, err := js.PublishAsync(topic, payload); err != nil {
			return err
		}
		if i%4096 == 4095 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return fmt.Errorf("publishes not acknowledged within a minute")
	}
	return nil
}

// runRaw is the queue's own ceiling: Consume and a plain Ack per event.
func runRaw(url, topic, app string, n int, name string, timeout time.Duration) error {
	js, nc, err := connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx := context.Background()
	s := mapping.Defaults()
	c, err := provision.EnsureConsumer(ctx, js, app, "", topic, s)
	if err != nil {
		return err
	}
	m := newMeter(n)
	cc, err := c.Consume(func(msg jetstream.Msg) {
		md, _ := msg.Metadata()
		var pub time.Time
		if md != nil {
			pub = md.Timestamp
		}
		_ = msg.Ack()
		m.hit(pub)
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	fmt.Fprintln(os.Stderr, "raw consumer ready")
	select {
	case <-m.done:
	case <-time.After(timeout):
		return fmt.Errorf("raw: only %d of %d events", m.count.Load(), n)
	}
	emit(m.result(name))
	return nil
}

// runHTTP is the per-request ceiling: conc clients POSTing to the app.
func runHTTP(url string, n, conc, size int) error {
	tr := &http.Transport{MaxIdleConns: conc * 2, MaxIdleConnsPerHost: conc * 2, DisableCompression: true}
	client := &http.Client{Transport: tr}
	payload := bytes.Repeat([]byte("x"), size)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(payload))
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// report reads result lines and prints the median of each name.
func report(r io.Reader) error {
	by := map[string][]result{}
	var order []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var res result
		if json.Unmarshal(sc.Bytes(), &res) != nil || res.Name == "" {
			continue
		}
		if _, ok := by[res.Name]; !ok {
			order = append(order, res.Name)
		}
		by[res.Name] = append(by[res.Name], res)
	}
	med := func(xs []float64) float64 {
		sort.Float64s(xs)
		return xs[len(xs)/2]
	}
	fmt.Printf("%-18s %5s %14s %9s %9s %12s %10s %11s %10s %11s\n", "name", "runs", "events/s(med)", "p50_us", "p99_us", "peak_rss_kib", "server_us", "sidecar_us", "server_sys", "sidecar_sys")
	for _, name := range order {
		var rates, p50, p99, rss, srv, side, srvSys, sideSys []float64
		for _, x := range by[name] {
			rates, p50, p99, rss = append(rates, x.Rate), append(p50, x.P50us), append(p99, x.P99us), append(rss, float64(x.RSSKiB))
			srv, side = append(srv, x.ServerUS), append(side, x.SidecarUS)
			srvSys, sideSys = append(srvSys, x.ServerSys), append(sideSys, x.SidecarSys)
		}
		fmt.Printf("%-18s %5d %14.0f %9.0f %9.0f %12.0f %10.1f %11.1f %10.2f %11.2f\n", name, len(rates), med(rates), med(p50), med(p99), med(rss), med(srv), med(side), med(srvSys), med(sideSys))
		if len(rates) > 1 {
			fmt.Printf("%-18s       per run: %v\n", "", rates)
		}
	}
	return sc.Err()
}
