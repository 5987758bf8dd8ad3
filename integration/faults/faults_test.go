// Package faults runs Hot Topic on a real 3-node JetStream cluster (separate
// nats-server processes on loopback) and kills parts of it while events flow:
// the stream leader, the node the sidecar is connected to, the meta leader,
// every node in turn, and the scaler leader together with a node. Each fault
// counts lost and duplicated events at the app.
package faults_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

const (
	eventsTopic = "faults.events"
	wakeTopic   = "faults.wake"
	// Events per fault: enough to span the fault, few enough for CI.
	perFault    = 1200
	concurrency = 4
	// What the sidecar holds at most (in flight to the app plus buffered):
	// concurrency + max(3, concurrency/2), as sidecar/config.go sizes its pull
	// window. Duplicates only come from deliveries whose ack was lost with a
	// dying node, so each kill can cause at most this many.
	inFlightPerKill = concurrency + 3
)

// app is the function: it records every delivery by ce-id.
type app struct {
	mu    sync.Mutex
	seen  map[string]int
	total int
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Ce-Id")
	a.mu.Lock()
	a.seen[id]++
	a.total++
	a.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// count says how many of ids were delivered at least once and how many
// deliveries of them were extra.
func (a *app) count(ids []string) (delivered, dups int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		if n := a.seen[id]; n > 0 {
			delivered++
			dups += n - 1
		}
	}
	return delivered, dups
}

// figures of one fault, for docs/reliability.md.
type figures struct {
	Fault      string  `json:"fault"`
	Published  int     `json:"published"`
	Delivered  int     `json:"delivered"`
	Lost       int     `json:"lost"`
	Duplicated int     `json:"duplicated"`
	Leadership float64 `json:"scaler_leadership_seconds,omitempty"`
	Seconds    float64 `json:"seconds"`
}

type system struct {
	t       *testing.T
	cluster *natstest.Cluster
	js      jetstream.JetStream
	cc      *ccdouble.CC
	app     *app
	fnGUID  string
	wakeApp string
	scalers map[string]*runningScaler
	sidecar string // its NATS connection name
	mu      sync.Mutex
}

type runningScaler struct {
	s    *scaler.Scaler
	nc   *nats.Conn
	stop func()
}

func clusterConn(t *testing.T, urls, name string) *nats.Conn {
	nc, err := nats.Connect(urls, nats.Name(name), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func setup(t *testing.T, opts ...natstest.ClusterOption) *system {
	Expect := NewWithT(t).Expect
	Eventually := NewWithT(t).Eventually
	sys := &system{t: t, cluster: natstest.RunCluster(t, 3, opts...), app: &app{seen: map[string]int{}}, scalers: map[string]*runningScaler{}}
	var err error
	sys.js, err = jetstream.New(clusterConn(t, sys.cluster.URLs(), "publisher"))
	Expect(err).NotTo(HaveOccurred())

	sys.cc = ccdouble.New(t)
	space := sys.cc.AddSpace(sys.cc.AddOrg("acme"), "prod")
	sys.cc.AddClient("hottopic-scaler", "secret", ccdouble.SpaceDeveloper(space))
	labels := map[string]string{mapping.LabelMapped: "true"}
	sys.fnGUID = sys.cc.AddApp(space, "fn", labels, map[string]string{
		mapping.AnnTopics: eventsTopic, mapping.AnnMin: "1", mapping.AnnMax: "1", mapping.AnnConcurrency: fmt.Sprint(concurrency),
		mapping.AnnMaxDeliver: "100", mapping.AnnTimeout: "10", mapping.AnnIdleSeconds: "3600",
	})
	sys.cc.SetInstances(sys.fnGUID, "web", 1)
	sys.wakeApp = sys.cc.AddApp(space, "sleeper", labels, map[string]string{mapping.AnnTopics: wakeTopic, mapping.AnnIdleSeconds: "3600"})
	sys.cc.SetInstances(sys.wakeApp, "web", 0)

	sys.startScaler("a")
	sys.startScaler("b")
	Eventually(sys.leaders, 20*time.Second, 20*time.Millisecond).Should(HaveLen(1))
	Eventually(func() error {
		_, err := sys.js.Consumer(context.Background(), topic.StreamName(eventsTopic), topic.ConsumerName(sys.fnGUID))
		return err
	}, 20*time.Second).Should(Succeed())
	info, err := sys.js.Stream(context.Background(), topic.StreamName(eventsTopic))
	Expect(err).NotTo(HaveOccurred())
	Expect(info.CachedInfo().Config.Replicas).To(Equal(3), "a topic stream on a 3-node cluster has 3 replicas")
	for _, name := range []string{"KV_" + mapping.Bucket, "KV_" + scaler.LeaderBucket, provision.AdvisoryStream, topic.DLQStream} {
		Eventually(func() (int, error) {
			s, err := sys.js.Stream(context.Background(), name)
			if err != nil {
				return 0, err
			}
			return s.CachedInfo().Config.Replicas, nil
		}, 20*time.Second).Should(Equal(3), name+" has 3 replicas")
	}

	srv := httptest.NewServer(sys.app)
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	cmd := exec.Command(proctest.Build(t, "./cmd/hottopic-sidecar"))
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("PORT=%d", port),
		fmt.Sprintf(`VCAP_APPLICATION={"application_id":%q,"application_name":"fn","instance_index":0}`, sys.fnGUID),
		"HOTTOPIC_NATS_URL="+sys.cluster.URLs(),
		fmt.Sprintf("HOTTOPIC_LISTEN=127.0.0.1:%d", proctest.FreePort(t)),
	)
	sc := proctest.Start(t, cmd)
	sys.sidecar = "hottopic-sidecar/fn/0"
	Eventually(func() string { return sys.cluster.ClientNode(sys.sidecar) }, 20*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty(), sc.Output)
	// The sidecar pulls once it follows its mapping: one event through proves it.
	ids := sys.publish(t, "warmup", 1, nil)
	Eventually(func() int { d, _ := sys.app.count(ids); return d }, 30*time.Second, 20*time.Millisecond).Should(Equal(1), sc.Output)
	return sys
}

func (sys *system) startScaler(id string) {
	t := sys.t
	nc := clusterConn(t, sys.cluster.URLs(), "scaler-"+id)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cfplatform.New(cfplatform.Config{API: sys.cc.URL(), ClientID: "hottopic-scaler", ClientSecret: "secret", CacheTTL: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := scaler.New(js, p, scaler.WithInstanceID(id),
		scaler.WithPollInterval(200*time.Millisecond), scaler.WithDiscoveryInterval(time.Second),
		scaler.WithLogger(slog.New(slog.NewTextHandler(testWriter{t, id}, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	sys.mu.Lock()
	sys.scalers[id] = &runningScaler{s: s, nc: nc, stop: stop}
	sys.mu.Unlock()
}

// leaders lists the scalers that lead.
func (sys *system) leaders() []string {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	var out []string
	for id, rs := range sys.scalers {
		if rs.s.Leader() {
			out = append(out, id)
		}
	}
	return out
}

type testWriter struct {
	t  *testing.T
	id string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("scaler %s: %s", w.id, strings.TrimSpace(string(p)))
	return len(p), nil
}

// publish stores n events on the events topic, paced, each retried with the
// same Nats-Msg-Id until JetStream acknowledges it; at(i) runs before event
// i (the fault). It returns the ids.
func (sys *system) publish(t *testing.T, prefix string, n int, at func(i int)) []string {
	ids := make([]string, 0, n)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		if at != nil {
			at(i)
		}
		<-tick.C
		id := fmt.Sprintf("%s-%d", prefix, i)
		msg := nats.NewMsg(eventsTopic)
		msg.Data = []byte(id)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := sys.js.PublishMsg(ctx, msg)
			cancel()
			if err == nil {
				break
			}
			if attempt == 200 {
				t.Fatalf("event %s not stored after 200 attempts: %v", id, err)
			}
			time.Sleep(50 * time.Millisecond) // back-off between publish retries
		}
		ids = append(ids, id)
	}
	return ids
}

// settle waits until every published event reached the app and the app's
// consumer has nothing pending or in flight (so no redelivery is still to
// come), and returns the figures.
func (sys *system) settle(t *testing.T, fault string, ids []string, start time.Time) figures {
	Eventually := NewWithT(t).Eventually
	Eventually(func() int { d, _ := sys.app.count(ids); return len(ids) - d }, 120*time.Second, 50*time.Millisecond).
		Should(BeZero(), "events lost: published but never delivered")
	Eventually(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := sys.js.Consumer(ctx, topic.StreamName(eventsTopic), topic.ConsumerName(sys.fnGUID))
		if err != nil {
			return false
		}
		info := c.CachedInfo()
		return info.NumPending == 0 && info.NumAckPending == 0
	}, 60*time.Second, 100*time.Millisecond).Should(BeTrue(), "the consumer settles")
	d, dups := sys.app.count(ids)
	f := figures{Fault: fault, Published: len(ids), Delivered: d, Lost: len(ids) - d, Duplicated: dups, Seconds: time.Since(start).Seconds()}
	return f
}

// settleChecked settles, reports the figures and fails on any loss or on
// more duplicates than one fault can leave (what was in flight).
func (sys *system) settleChecked(t *testing.T, fault string, ids []string, start time.Time) figures {
	f := sys.settle(t, fault, ids, start)
	report(t, f)
	Expect := NewWithT(t).Expect
	Expect(f.Lost).To(BeZero())
	Expect(f.Duplicated).To(BeNumerically("<=", inFlightPerKill), "duplicates beyond what was in flight at the fault")
	return f
}

func report(t *testing.T, f figures) {
	b, _ := json.Marshal(f)
	t.Logf("figures: %s", b)
	if p := os.Getenv("HOTTOPIC_FAULTS_REPORT"); p != "" {
		fh, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(fh, "%s\n", b)
			fh.Close()
		}
	}
}

func streamLeader(sys *system) string { return streamLeaderOf(sys, topic.StreamName(eventsTopic)) }

func streamLeaderOf(sys *system, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := sys.js.Stream(ctx, stream)
	if err != nil || s.CachedInfo().Cluster == nil {
		return ""
	}
	return s.CachedInfo().Cluster.Leader
}

func TestFaultsOnA3NodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node nats-server cluster with faults")
	}
	sys := setup(t)
	c := sys.cluster

	// killAndRestart kills the node named by pick() a third of the way
	// through the events and starts it again at two thirds.
	killAndRestart := func(t *testing.T, fault string, pick func() string) {
		Expect := NewWithT(t).Expect
		start := time.Now()
		victim := -1
		ids := sys.publish(t, fault, perFault, func(i int) {
			switch i {
			case perFault / 3:
				name := pick()
				Expect(name).NotTo(BeEmpty(), "the node to kill")
				victim = c.Index(name)
				t.Logf("%s: killing %s", fault, name)
				c.Kill(victim)
			case 2 * perFault / 3:
				c.Start(victim)
			}
		})
		c.WaitHealthy()
		sys.settleChecked(t, fault, ids, start)
	}

	t.Run("kill the stream leader mid-stream", func(t *testing.T) {
		killAndRestart(t, "stream-leader", func() string { return streamLeader(sys) })
	})
	t.Run("kill the node the sidecar is connected to", func(t *testing.T) {
		killAndRestart(t, "sidecar-node", func() string { return c.ClientNode(sys.sidecar) })
	})
	t.Run("kill the meta leader", func(t *testing.T) {
		killAndRestart(t, "meta-leader", c.MetaLeader)
	})

	t.Run("restart all three nodes in turn", func(t *testing.T) {
		start := time.Now()
		step := perFault / 4
		ids := sys.publish(t, "rolling", perFault, func(i int) {
			if i > 0 && i%step == 0 && i/step <= 3 {
				n := i/step - 1
				t.Logf("rolling: restarting %s", c.Nodes[n].Name)
				c.Kill(n)
				c.Start(n)
				c.WaitHealthy() // one node at a time, as an operator rolls a cluster
			}
		})
		sys.settleChecked(t, "rolling-restart", ids, start)
	})

	t.Run("kill the scaler leader and the node leading the election bucket at once", func(t *testing.T) {
		Expect := NewWithT(t).Expect
		Eventually := NewWithT(t).Eventually
		Eventually(sys.leaders, 20*time.Second, 20*time.Millisecond).Should(HaveLen(1))
		start := time.Now()
		var killedAt time.Time
		var leadership atomic.Int64
		victim := -1
		ids := sys.publish(t, "scaler-and-node", perFault, func(i int) {
			switch i {
			case perFault / 3:
				lead := sys.leaders()[0]
				rs := sys.scalers[lead]
				// The node leading the election bucket: the scalers need it.
				// Awaited: right after the rolling restart the bucket may be
				// between leaders for a moment.
				var bucketLeader string
				Eventually(func() string {
					bucketLeader = streamLeaderOf(sys, "KV_"+scaler.LeaderBucket)
					return bucketLeader
				}, 20*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty(), "the election bucket's leader")
				victim = c.Index(bucketLeader)
				t.Logf("killing scaler %s and node %s", lead, c.Nodes[victim].Name)
				killedAt = time.Now()
				rs.nc.Close() // a crash: no goodbye, its key must expire
				c.Kill(victim)
				rs.stop()
				sys.mu.Lock()
				delete(sys.scalers, lead)
				sys.mu.Unlock()
				// An event for an app at zero while the cluster is short of a node.
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := sys.js.Publish(ctx, wakeTopic, []byte("wake up"))
					cancel()
					if err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond) // back-off between publish retries
				}
				go func() {
					for len(sys.leaders()) != 1 {
						time.Sleep(10 * time.Millisecond) // measuring, not asserting
					}
					leadership.Store(int64(time.Since(killedAt)))
				}()
			case 2 * perFault / 3:
				c.Start(victim)
			}
		})
		Eventually(sys.leaders, 10*time.Second, 20*time.Millisecond).Should(HaveLen(1), "a scaler leads again")
		c.WaitHealthy()
		Eventually(func() int { return sys.cc.Instances(sys.wakeApp, "web") }, 20*time.Second, 50*time.Millisecond).
			Should(Equal(1), "the app at zero is scaled out once the cluster is whole")
		f := sys.settle(t, "scaler-leader-and-node", ids, start)
		Eventually(leadership.Load, 10*time.Second).ShouldNot(BeZero())
		f.Leadership = time.Duration(leadership.Load()).Seconds()
		report(t, f)
		Expect(f.Lost).To(BeZero())
		Expect(f.Duplicated).To(BeNumerically("<=", inFlightPerKill), "duplicates beyond what was in flight at the kill")
	})
}
