package natstest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hottopic-io/hottopic/internal/natsconf"
)

// Cluster is a JetStream cluster of real nats-server processes on loopback:
// each node has its own client, route and monitoring port and its own store
// directory, keeps them across Kill and Start, and is killed when the test
// ends.
type Cluster struct {
	t     testing.TB
	bin   string
	Name  string
	Nodes []*Node
}

// Node is one server of a Cluster.
type Node struct {
	Name        string
	ClientPort  int
	ClusterPort int
	HTTPPort    int
	StoreDir    string
	conf        string
	logFile     string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// ClusterOption changes a node before the cluster starts.
type ClusterOption func(i int, nd *Node)

// StoreDirs gives node i the JetStream store directory dir(i) instead of one
// under the test's temporary directory ("" keeps the default): a directory on
// a small file system of its own, to fill it.
func StoreDirs(dir func(i int) string) ClusterOption {
	return func(i int, nd *Node) {
		if d := dir(i); d != "" {
			nd.StoreDir = d
		}
	}
}

// RunCluster starts an n-node JetStream cluster and waits until it has a meta
// leader and every node is healthy. The nats-server binary is built from the
// module version this project requires (see ServerBinary).
func RunCluster(t testing.TB, n int, opts ...ClusterOption) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: ServerBinary(t), Name: "hottopic-test"}
	dir := t.TempDir()
	ports := freePorts(t, 3*n)
	for i := range n {
		nd := &Node{
			Name:        fmt.Sprintf("n%d", i+1),
			ClientPort:  ports[3*i],
			ClusterPort: ports[3*i+1],
			HTTPPort:    ports[3*i+2],
		}
		nd.StoreDir = filepath.Join(dir, nd.Name, "jetstream")
		nd.conf = filepath.Join(dir, nd.Name, "nats.conf")
		nd.logFile = filepath.Join(dir, nd.Name, "nats.log")
		for _, o := range opts {
			o(i, nd)
		}
		c.Nodes = append(c.Nodes, nd)
	}
	var confs []natsconf.Node
	for _, nd := range c.Nodes {
		confs = append(confs, natsconf.Node{Name: nd.Name, ClientPort: nd.ClientPort, HTTPPort: nd.HTTPPort, ClusterPort: nd.ClusterPort, StoreDir: nd.StoreDir})
	}
	for i, nd := range c.Nodes {
		if err := os.MkdirAll(filepath.Dir(nd.conf), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(nd.conf, []byte(natsconf.ClusterNode(c.Name, confs[i], confs)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			nd.kill()
		}
		if t.Failed() {
			for _, nd := range c.Nodes {
				b, _ := os.ReadFile(nd.logFile)
				t.Logf("nats-server %s log (tail):\n%s", nd.Name, tailLines(string(b), 40))
			}
		}
	})
	for i := range c.Nodes {
		c.Start(i)
	}
	c.WaitHealthy()
	return c
}

// URLs is the comma-separated client URL list of every node, as a bound
// service's "urls" credential or HOTTOPIC_NATS_URL gives it.
func (c *Cluster) URLs() string {
	var us []string
	for _, nd := range c.Nodes {
		us = append(us, nd.URL())
	}
	return strings.Join(us, ",")
}

// URL is the node's client URL.
func (nd *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.ClientPort) }

// Node finds a node by server name.
func (c *Cluster) Node(name string) *Node {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	c.t.Fatalf("no node named %q in the cluster", name)
	return nil
}

// Kill SIGKILLs node i and waits until it is gone.
func (c *Cluster) Kill(i int) { c.Nodes[i].kill() }

// Start starts node i again (same ports, same store) and waits until it
// accepts clients; WaitHealthy waits until it has caught up.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if err := c.TryStart(i); err != nil {
		c.t.Fatal(err)
	}
}

// TryStart is Start for a node that may refuse to start (a store it cannot
// write): the error says why, with the tail of the node's log.
func (c *Cluster) TryStart(i int) error { return c.start(i) }

// Running reports whether node i's process is alive.
func (c *Cluster) Running(i int) bool {
	nd := c.Nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// Index is the position of the node with the given server name.
func (c *Cluster) Index(name string) int {
	for i, nd := range c.Nodes {
		if nd.Name == name {
			return i
		}
	}
	c.t.Fatalf("no node named %q in the cluster", name)
	return -1
}

func (c *Cluster) start(i int) error {
	nd := c.Nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		select {
		case <-nd.done:
		default:
			return fmt.Errorf("node %s is already running", nd.Name)
		}
	}
	logf, err := os.OpenFile(nd.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "-c", nd.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start nats-server %s: %v", nd.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	nd.cmd, nd.done = cmd, done
	// Await the client port (the process may also die: a port taken).
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", nd.ClientPort), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(nd.logFile)
			return fmt.Errorf("nats-server %s exited at start:\n%s", nd.Name, tailLines(string(b), 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server %s does not accept clients after 30s", nd.Name)
		}
	}
}

func (nd *Node) kill() {
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// WaitHealthy waits (up to 60 s) until every running node answers its
// /healthz with 200: JetStream is up, it knows the meta leader and its
// streams and consumers are current.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for i, nd := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		for {
			code, body := httpGet(fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.HTTPPort))
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("nats-server %s not healthy after 60s: %d %s", nd.Name, code, body)
			}
			time.Sleep(50 * time.Millisecond) // polling an HTTP endpoint: nothing to await
		}
	}
}

// Healthz is node i's /healthz answer: 200 when JetStream is up and current.
func (c *Cluster) Healthz(i int) (int, string) {
	return httpGet(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.Nodes[i].HTTPPort))
}

// MetaLeader is the server name of the JetStream meta leader, as a running
// node reports it ("" when none is known).
func (c *Cluster) MetaLeader() string {
	for i, nd := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		code, body := httpGet(fmt.Sprintf("http://127.0.0.1:%d/jsz", nd.HTTPPort))
		if code == http.StatusOK && json.Unmarshal([]byte(body), &jsz) == nil && jsz.Meta != nil && jsz.Meta.Leader != "" {
			return jsz.Meta.Leader
		}
	}
	return ""
}

// ClientNode is the name of the node a client named name is connected to
// ("" when none), from each node's /connz.
func (c *Cluster) ClientNode(name string) string {
	for i, nd := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		var connz struct {
			Conns []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		code, body := httpGet(fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1024", nd.HTTPPort))
		if code != http.StatusOK || json.Unmarshal([]byte(body), &connz) != nil {
			continue
		}
		for _, cn := range connz.Conns {
			if cn.Name == name {
				return nd.Name
			}
		}
	}
	return ""
}

func httpGet(u string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ServerBinary returns the path of a nats-server binary of the version of
// github.com/nats-io/nats-server/v2 this module requires, built with go build
// the first time and cached like scripts/tools.sh caches tools (in
// $HOTTOPIC_TOOLS_DIR, else ${XDG_CACHE_HOME:-~/.cache}/hottopic-tools, under
// the same name, so either builds it for the other).
func ServerBinary(t testing.TB) string {
	t.Helper()
	ver := serverVersion()
	if ver == "" {
		t.Fatal("natstest: cannot tell which nats-server version this module requires")
	}
	cache := os.Getenv("HOTTOPIC_TOOLS_DIR")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				t.Fatal(err)
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "hottopic-tools")
	}
	bin := filepath.Join(cache, "bin", "nats-server-"+ver)
	if isExec(bin) {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "nats-server.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil { // parallel test packages
		t.Fatal(err)
	}
	if isExec(bin) {
		return bin
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin+".tmp", serverModule)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server %s: %v\n%s", ver, err, out)
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

func serverVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == serverModule {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	// Test binaries carry no dependency list: ask the go command.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", serverModule).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

const serverModule = "github.com/nats-io/nats-server/v2"

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
