package broker_test

// The broker on a 3-node cluster of real nats-server processes configured by
// `hottopic-broker init --cluster`: bindings work and are limited on every
// node, one node's loss stops nothing, revocation reaches every node (also
// one that was down), and two broker instances keep one consistent state.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/internal/proctest"
)

// clusterSystem is a system whose NATS is three nodes.
type clusterSystem struct {
	*system
	nodes []*natsNode
}

type natsNode struct {
	name   string
	scheme string // nats, or tls with init --tls
	port   int    // client; monitoring at port+MonitorPortOffset
	conf   string
	proc   *proctest.Proc
}

func (n *natsNode) url() string { return fmt.Sprintf("%s://127.0.0.1:%d", n.scheme, n.port) }

// clusterPorts finds three client ports whose route and monitoring ports
// (+2000, +4000) are free on 127.0.0.1 too, and that init accepts together.
func clusterPorts(t *testing.T) string {
	t.Helper()
	free := func(p int) bool {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		l.Close()
		return true
	}
	for {
		var addrs []string
		for len(addrs) < 3 {
			p := proctest.FreePort(t)
			if p+broker.MonitorPortOffset <= 65535 && free(p+broker.RoutePortOffset) && free(p+broker.MonitorPortOffset) {
				addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(p))
			}
		}
		spec := strings.Join(addrs, ",")
		if _, err := broker.ParseCluster(spec); err == nil {
			return spec
		}
	}
}

// startClusterSystem runs init --cluster (with initFlags, e.g. --tls), the
// three nodes and a broker.
func startClusterSystem(t *testing.T, initFlags ...string) *clusterSystem {
	t.Helper()
	s := &clusterSystem{system: &system{t: t, dir: t.TempDir()}}
	spec := clusterPorts(t)
	out, code := proctest.Run(t, exec.Command(proctest.Build(t, "./cmd/hottopic-broker"), append(append([]string{"init", "--cluster", spec}, initFlags...), s.dir)...), time.Minute)
	if code != 0 {
		t.Fatalf("hottopic-broker init --cluster: %s", out)
	}
	scheme := s.readEnvs()
	nodes, _ := broker.ParseCluster(spec)
	var urls []string
	for i, n := range nodes {
		nd := &natsNode{name: fmt.Sprintf("hottopic-%d", i+1), scheme: scheme, port: n.Port, conf: filepath.Join(broker.ClusterNodeDir(s.dir, i), broker.ServerConfFile)}
		fi, err := os.Stat(nd.conf)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v: it holds the route password", nd.conf, fi.Mode().Perm())
		}
		s.nodes = append(s.nodes, nd)
		urls = append(urls, nd.url())
	}
	for i := range s.nodes {
		s.start(i)
	}
	s.natsURL = strings.Join(urls, ",")
	if s.env["HOTTOPIC_NATS_URL"] != s.natsURL {
		t.Fatalf("broker.env: HOTTOPIC_NATS_URL=%s, want every node: %s", s.env["HOTTOPIC_NATS_URL"], s.natsURL)
	}
	// The broker starts with the servers, likely before they have a
	// JetStream leader: it waits for one.
	s.brokerURL = s.startBroker()
	s.awaitHealthy()
	return s
}

// start starts node i from the configuration init wrote, on loopback only.
func (s *clusterSystem) start(i int) {
	s.t.Helper()
	n := s.nodes[i]
	n.proc = proctest.Start(s.t, exec.Command(natsServer(s.t), "-c", n.conf, "-a", "127.0.0.1"))
	NewWithT(s.t).Eventually(n.proc.Out, time.Minute).Should(gbytes.Say("Server is ready"))
}

// kill SIGKILLs node i and waits until it is gone.
func (s *clusterSystem) kill(i int) {
	s.t.Helper()
	_ = syscall.Kill(-s.nodes[i].proc.Cmd.Process.Pid, syscall.SIGKILL)
	<-s.nodes[i].proc.Done()
}

// awaitHealthy polls every running node's /healthz (on its loopback
// monitoring port) until JetStream is current there.
func (s *clusterSystem) awaitHealthy() {
	s.t.Helper()
	for _, n := range s.nodes {
		if n.proc.Exited() {
			continue
		}
		u := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.port+broker.MonitorPortOffset)
		NewWithT(s.t).Eventually(func() int {
			resp, err := http.Get(u)
			if err != nil {
				return 0
			}
			resp.Body.Close()
			return resp.StatusCode
		}, 2*time.Minute, 100*time.Millisecond).Should(Equal(http.StatusOK), "%s /healthz", n.name)
	}
}

// at is creds with the URL of one node, to connect there.
func at(creds map[string]any, n *natsNode) map[string]any {
	c := map[string]any{}
	for k, v := range creds {
		c[k] = v
	}
	c["uri"], c["urls"] = n.url(), n.url()
	return c
}

// tryDial connects with creds and closes again: the server's verdict.
func (s *clusterSystem) tryDial(creds map[string]any) error {
	c, err := s.dial(creds)
	if err == nil {
		c.nc.Close()
	}
	return err
}

// awaitClosed waits for the server to close c (a revoked credential).
func awaitClosed(t *testing.T, c *client, what string) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(time.Minute):
		t.Fatalf("%s was not closed", what)
	}
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-server processes and brokers")
	}
	Expect := NewWithT(t).Expect
	Eventually := NewWithT(t).Eventually
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := startClusterSystem(t)

	s.provision("bus-1", orders)
	app := s.bind("bus-1", "bind-1", "app-1")
	Expect(app["urls"]).To(Equal(s.natsURL), "bound apps get every node")
	key := s.bind("bus-1", "key-1", "")

	// The state and the bus's streams have a replica on every node.
	ijs, _ := s.internal()
	for _, b := range []string{broker.BusesBucket, broker.BindingsBucket} {
		st, err := ijs.Stream(ctx, "KV_"+b)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.CachedInfo().Config.Replicas).To(Equal(3), b)
	}
	// Provisioning returned only once every node serves JetStream to the
	// account (a node may answer 503 "not enabled for account" for a moment
	// after the push), so the bus's first stream is made at the first try.
	Expect(s.ordersStream(ctx, "bus-1").Config.Replicas).To(Equal(3))

	// On every node the binding and the service key connect, may publish to
	// the topic, and may not subscribe to it (the app not to another app's
	// inbox either): the account and its users' limits are everywhere.
	onNode := make([]*client, len(s.nodes))
	for i, n := range s.nodes {
		c := s.mustDial(at(app, n))
		Expect(c.nc.ConnectedUrl()).To(Equal(n.url()))
		_, err := c.js.Publish(ctx, orders, []byte("from "+n.name))
		Expect(err).NotTo(HaveOccurred(), n.name)
		c.deniedSub(t, orders)
		c.deniedSub(t, "_INBOX_key-1.>")
		onNode[i] = c

		k := s.mustDial(at(key, n))
		_, err = k.js.Publish(ctx, orders, []byte("key on "+n.name))
		Expect(err).NotTo(HaveOccurred(), n.name)
		k.deniedSub(t, orders)
	}

	// A bus that will be deprovisioned while a node is down.
	s.provision("bus-3", orders)
	key3 := s.bind("bus-3", "key-3", "")
	for _, n := range s.nodes {
		s.mustDial(at(key3, n)).nc.Close()
	}

	// One node down, the one that leads the buses bucket: the broker still
	// provisions, binds and unbinds, and the revocation reaches the nodes
	// that run.
	leader, err := ijs.Stream(ctx, "KV_"+broker.BusesBucket)
	Expect(err).NotTo(HaveOccurred())
	down := -1
	for i, n := range s.nodes {
		if n.name == leader.CachedInfo().Cluster.Leader {
			down = i
		}
	}
	Expect(down).NotTo(Equal(-1), "the leader of the buses bucket: %q", leader.CachedInfo().Cluster.Leader)
	s.kill(down)
	s.provision("bus-2", orders)
	key2 := s.bind("bus-2", "key-2", "")
	app2 := s.bind("bus-1", "bind-2", "app-2")
	Expect(s.unbind("bus-1", "bind-1")).To(Equal(http.StatusOK))
	Expect(s.unbind("bus-3", "key-3")).To(Equal(http.StatusOK))
	code, body := s.osb("DELETE", "/v2/service_instances/bus-3"+query, nil)
	Expect(code).To(Equal(http.StatusOK), "%v", body)
	for i, n := range s.nodes {
		if i == down {
			continue
		}
		awaitClosed(t, onNode[i], "bind-1's connection on "+n.name)
		_, err := s.dial(at(app, n))
		Expect(err).To(MatchError(ContainSubstring("Authorization Violation")), n.name)
	}
	st := s.state()
	_, ok, err := st.Binding(ctx, "bus-1", "bind-1")
	Expect(err).NotTo(HaveOccurred())
	Expect(ok).To(BeFalse())
	_, ok, err = st.Binding(ctx, "bus-1", "bind-2")
	Expect(err).NotTo(HaveOccurred())
	Expect(ok).To(BeTrue())

	// Back up, the node takes what it missed from the others: bus-2's
	// account, and bind-1's revocation.
	s.start(down)
	s.awaitHealthy()
	Eventually(func() error { return s.tryDial(at(key2, s.nodes[down])) }, time.Minute, 200*time.Millisecond).Should(Succeed(), "bus-2, made while the node was down, reaches it")
	Eventually(func() error { return s.tryDial(at(app, s.nodes[down])) }, time.Minute, 200*time.Millisecond).Should(MatchError(ContainSubstring("Authorization Violation")), "bind-1, revoked while the node was down")
	// bus-3, deprovisioned while the node was down: its key is refused there
	// once the node caught up, and the node brought no old JWT back to the
	// others.
	Eventually(func() error { return s.tryDial(at(key3, s.nodes[down])) }, time.Minute, 200*time.Millisecond).Should(HaveOccurred(), "key-3 of bus-3, deprovisioned while the node was down")
	for _, n := range s.nodes {
		_, err := s.dial(at(key3, n))
		Expect(err).To(HaveOccurred(), "key-3 on %s", n.name)
	}
	for _, id := range []string{"bus-1", "bus-2"} {
		_, ok, err := st.Bus(ctx, id)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue(), id)
	}

	// All up: unbind closes the binding's connection on every node, the
	// ones the broker is not connected to included, and refuses new ones.
	for i, n := range s.nodes {
		onNode[i] = s.mustDial(at(app2, n))
	}
	Expect(s.unbind("bus-1", "bind-2")).To(Equal(http.StatusOK))
	for i, n := range s.nodes {
		awaitClosed(t, onNode[i], "bind-2's connection on "+n.name)
		_, err := s.dial(at(app2, n))
		Expect(err).To(MatchError(ContainSubstring("Authorization Violation")), n.name)
	}

	// Deprovision reaches every node: the bus's users can connect nowhere.
	Expect(s.unbind("bus-2", "key-2")).To(Equal(http.StatusOK))
	code, body = s.osb("DELETE", "/v2/service_instances/bus-2"+query, nil)
	Expect(code).To(Equal(http.StatusOK), "%v", body)
	for _, n := range s.nodes {
		_, err := s.dial(at(key2, n))
		Expect(err).To(HaveOccurred(), n.name)
	}

	// Two broker instances at once: each provisions buses, and both bind
	// and unbind on one bus (each unbind rewrites the bus's revocations).
	brokers := []string{s.brokerURL, s.startBroker()}
	const each = 4
	user, password := s.env[broker.EnvUsername], s.env[broker.EnvPassword]
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fails []string
		creds = map[string]map[string]any{}
	)
	call := func(url, method, path string, body any, want int) map[string]any {
		code, out, err := osbRequest(url, user, password, method, path, body)
		if err != nil || code != want {
			mu.Lock()
			fails = append(fails, fmt.Sprintf("%s %s: %d %v %v", method, path, code, out, err))
			mu.Unlock()
		}
		return out
	}
	for b, url := range brokers {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				call(url, "PUT", fmt.Sprintf("/v2/service_instances/c-%d-%d", b, i), map[string]any{
					"service_id": broker.ServiceID, "plan_id": broker.PlanID, "organization_guid": "org", "space_guid": "space",
					"parameters": map[string]any{"topics": []string{orders}},
				}, http.StatusCreated)
				id := fmt.Sprintf("cb-%d-%d", b, i)
				out := call(url, "PUT", "/v2/service_instances/bus-1/service_bindings/"+id, map[string]any{
					"service_id": broker.ServiceID, "plan_id": broker.PlanID, "bind_resource": map[string]any{"app_guid": "app-" + id},
				}, http.StatusCreated)
				if c, ok := out["credentials"].(map[string]any); ok {
					mu.Lock()
					creds[id] = c
					mu.Unlock()
				}
			}()
		}
	}
	// Both send the same provision at once: one makes the bus (201), the
	// other finds it made as asked (200).
	codes := make([]int, len(brokers))
	for b, url := range brokers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[b], _, _ = osbRequest(url, user, password, "PUT", "/v2/service_instances/same", map[string]any{
				"service_id": broker.ServiceID, "plan_id": broker.PlanID, "organization_guid": "org", "space_guid": "space",
				"parameters": map[string]any{"topics": []string{orders}},
			})
		}()
	}
	wg.Wait()
	Expect(fails).To(BeEmpty())
	Expect(creds).To(HaveLen(2 * each))
	Expect(codes).To(ConsistOf(http.StatusCreated, http.StatusOK))
	for id := range creds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := brokers[0]
			if strings.HasPrefix(id, "cb-1-") {
				url = brokers[1]
			}
			call(url, "DELETE", "/v2/service_instances/bus-1/service_bindings/"+id+query, nil, http.StatusOK)
		}()
	}
	wg.Wait()
	Expect(fails).To(BeEmpty())

	for b := range brokers {
		for i := range each {
			_, ok, err := st.Bus(ctx, fmt.Sprintf("c-%d-%d", b, i))
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
		}
	}
	bindings, err := st.Bindings(ctx)
	Expect(err).NotTo(HaveOccurred())
	for _, b := range bindings {
		Expect(b.ID).NotTo(HavePrefix("cb-"), "binding %s was unbound", b.ID)
	}
	bus1, _, err := st.Bus(ctx, "bus-1")
	Expect(err).NotTo(HaveOccurred())
	Expect(bus1.Revoked).To(HaveLen(2+2*each), "every unbind's revocation is recorded")
	// ... and every node enforces all of them: no revocation was lost
	// between the two instances' pushes.
	for id, c := range creds {
		for _, n := range s.nodes {
			_, err := s.dial(at(c, n))
			Expect(err).To(MatchError(ContainSubstring("Authorization Violation")), "%s on %s", id, n.name)
		}
	}
}
