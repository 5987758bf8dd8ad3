package dev

import (
	"context"
	"errors"
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
	"time"

	"github.com/hottopic-io/hottopic/dev/console"
	"github.com/hottopic-io/hottopic/dev/supervisor"
	"github.com/hottopic-io/hottopic/internal/natsconf"
)

// ClusterSize is how many nodes `hottopic dev --cluster` runs.
const ClusterSize = 3

// devCluster is `hottopic dev --cluster`: a JetStream cluster of three nodes
// on loopback, each a child process of this binary (`<exe> nats-node`), so
// that a node can be killed on its own (kill -9 PID) and watched die. A node
// that exits while the runtime runs is started again, as Diego restarts an
// instance (after 1 s, 2 s, 4 s… up to 30 s).
type devCluster struct {
	con      *console.Console
	exe      string
	nodes    []*clusterNode
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopping chan struct{}
}

type clusterNode struct {
	name                    string
	client, route, httpPort int
	conf, log               string
	mu                      sync.Mutex
	cmd                     *exec.Cmd
	exited                  chan struct{}
}

const clusterSource = "[HOTTOPIC/NATS]"

// startCluster starts the nodes on client ports port, port+1, port+2 with
// their stores under dataDir/cluster/<node>, and waits until every node is
// healthy (JetStream up, meta leader known).
func startCluster(exe, dataDir string, port int, con *console.Console) (*devCluster, error) {
	for i := range ClusterSize {
		if err := portFree(port + i); err != nil {
			return nil, err
		}
	}
	base, err := filepath.Abs(filepath.Join(dataDir, "cluster"))
	if err != nil {
		return nil, err
	}
	others, err := freeLoopbackPorts(2 * ClusterSize)
	if err != nil {
		return nil, err
	}
	c := &devCluster{con: con, exe: exe, stopping: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	for i := range ClusterSize {
		n := &clusterNode{
			name:     fmt.Sprintf("n%d", i+1),
			client:   port + i,
			route:    others[2*i],
			httpPort: others[2*i+1],
		}
		dir := filepath.Join(base, n.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cluster data directory %s: %v", dir, errors.Unwrap(err))
		}
		n.conf, n.log = filepath.Join(dir, "nats.conf"), filepath.Join(dir, "nats.log")
		c.nodes = append(c.nodes, n)
	}
	var confs []natsconf.Node
	for _, n := range c.nodes {
		confs = append(confs, natsconf.Node{Name: n.name, ClientPort: n.client, HTTPPort: n.httpPort, ClusterPort: n.route,
			StoreDir: filepath.Join(filepath.Dir(n.conf), "jetstream"), LogFile: n.log})
	}
	for i, n := range c.nodes {
		if err := os.WriteFile(n.conf, []byte(natsconf.ClusterNode("hottopic-dev", confs[i], confs)), 0o644); err != nil {
			return nil, err
		}
	}
	for _, n := range c.nodes {
		if err := c.start(n); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, n := range c.nodes {
		c.wg.Add(1)
		go c.supervise(n)
	}
	if err := c.awaitHealthy(60 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d on 127.0.0.1 is in use (another hottopic dev or NATS server?): --cluster uses --nats-port and the two ports after it; choose another with --nats-port", port)
		}
		return fmt.Errorf("cannot listen on 127.0.0.1:%d: %v", port, err)
	}
	return l.Close()
}

func freeLoopbackPorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// URLs is the comma-separated client URL list.
func (c *devCluster) URLs() string {
	var us []string
	for _, n := range c.nodes {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", n.client))
	}
	return strings.Join(us, ",")
}

// Describe names every node with its pid and URL.
func (c *devCluster) Describe() string {
	var parts []string
	for _, n := range c.nodes {
		n.mu.Lock()
		pid := 0
		if n.cmd != nil && n.cmd.Process != nil {
			pid = n.cmd.Process.Pid
		}
		n.mu.Unlock()
		parts = append(parts, fmt.Sprintf("%s pid %d nats://127.0.0.1:%d", n.name, pid, n.client))
	}
	return strings.Join(parts, ", ")
}

func (c *devCluster) start(n *clusterNode) error {
	cmd := exec.Command(c.exe, "nats-node", "--config", n.conf)
	// Its own process group, so that Ctrl-C in the terminal reaches only
	// hottopic dev, which stops the nodes last; killed with the runtime.
	cmd.SysProcAttr = supervisor.SysProcAttr()
	out, err := os.OpenFile(n.log+".out", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start NATS node %s: %v", n.name, err)
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	go func() { _ = cmd.Wait(); out.Close(); close(exited) }()
	return nil
}

// supervise restarts node n whenever it exits before Stop.
func (c *devCluster) supervise(n *clusterNode) {
	defer c.wg.Done()
	backoff := time.Second
	for {
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		n.mu.Unlock()
		started := time.Now()
		select {
		case <-c.stopping:
			return
		case <-exited:
		}
		select {
		case <-c.stopping:
			return
		default:
		}
		if time.Since(started) > 30*time.Second {
			backoff = time.Second
		}
		c.con.Printf(clusterSource, "node %s (pid %d) exited (%s); starting it again in %s", n.name, cmd.Process.Pid, cmd.ProcessState, backoff)
		select {
		case <-c.stopping:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		if err := c.start(n); err != nil {
			c.con.Printf(clusterSource, "node %s: %v", n.name, err)
			continue
		}
		n.mu.Lock()
		pid := n.cmd.Process.Pid
		n.mu.Unlock()
		c.con.Printf(clusterSource, "node %s started again (pid %d) on nats://127.0.0.1:%d", n.name, pid, n.client)
	}
}

// awaitHealthy waits until every node's /healthz answers 200.
func (c *devCluster) awaitHealthy(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second}
	for _, n := range c.nodes {
		for {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.httpPort))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("NATS cluster node %s not healthy within %s (see %s)", n.name, limit, n.log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Stop stops every node (SIGTERM, then SIGKILL after 10 s) and waits.
func (c *devCluster) Stop() {
	select {
	case <-c.stopping:
		return
	default:
		close(c.stopping)
	}
	c.wg.Wait()
	for _, n := range c.nodes {
		n.mu.Lock()
		if n.cmd != nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
		n.mu.Unlock()
	}
	for _, n := range c.nodes {
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		n.mu.Unlock()
		if cmd == nil {
			continue
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = supervisor.KillGroup(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	c.cancel()
}
