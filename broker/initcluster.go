package broker

// The cluster form of init: one set of keys, and one nats-server
// configuration per node (DIR/hottopic-N/nats-server.conf) that routes to the
// others, keeps its own JetStream store and runs the full resolver, so an
// account JWT the broker pushes to any node is stored by every node.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hottopic-io/hottopic/internal/natsconf"
)

// Port offsets of a cluster node from its client port, as NATS's own
// defaults (4222, 6222, 8222) and scripts/cluster.sh have them.
const (
	RoutePortOffset   = 2000
	MonitorPortOffset = 4000
	// ClusterName is the cluster's name in every node's configuration.
	ClusterName = "hottopic"
	// resolverSyncInterval: how soon a node that missed an account update
	// (down at the time) takes it from the others. It bounds how long a
	// revoked credential may still connect to a node that was restarted.
	resolverSyncInterval = "10s"
)

// ClusterNode is one node of a cluster setup: the address clients and the
// other nodes reach it at.
type ClusterNode struct {
	Host string
	Port int // client port; routes at Port+RoutePortOffset, monitoring (loopback) at Port+MonitorPortOffset
}

// URL is the node's client URL.
func (n ClusterNode) URL() string { return "nats://" + net.JoinHostPort(n.Host, strconv.Itoa(n.Port)) }

// clusterNodeName is node i's server_name and directory under DIR: hottopic-<i+1>.
func clusterNodeName(i int) string { return "hottopic-" + strconv.Itoa(i+1) }

// ParseCluster reads --cluster: HOST[:PORT] entries (PORT default 4222),
// comma-separated, an odd number and at least 3 (a majority of the nodes must
// survive the loss of one), whose client, route and monitoring ports do not
// collide on one host. Errors are one line.
func ParseCluster(spec string) ([]ClusterNode, error) {
	var nodes []ClusterNode
	for _, e := range strings.Split(spec, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			return nil, fmt.Errorf("--cluster %q has an empty entry: give HOST:PORT,HOST:PORT,HOST:PORT", spec)
		}
		host, port := e, "4222"
		if h, p, err := net.SplitHostPort(e); err == nil {
			host, port = h, p
		} else if strings.ContainsAny(e, ":/") {
			return nil, fmt.Errorf("--cluster entry %q must be HOST or HOST:PORT (no scheme)", e)
		}
		if host == "" || strings.ContainsAny(host, " \t\"/@") {
			return nil, fmt.Errorf("--cluster entry %q has no valid host", e)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p+MonitorPortOffset > 65535 {
			return nil, fmt.Errorf("--cluster entry %q: the port must be a number from 1 to %d (routes use PORT+%d, monitoring PORT+%d)", e, 65535-MonitorPortOffset, RoutePortOffset, MonitorPortOffset)
		}
		nodes = append(nodes, ClusterNode{Host: host, Port: p})
	}
	if len(nodes) < 3 || len(nodes)%2 == 0 {
		return nil, fmt.Errorf("--cluster lists %d node(s): a JetStream cluster needs an odd number, at least 3, so that a majority survives the loss of one", len(nodes))
	}
	if err := checkClusterPorts(nodes); err != nil {
		return nil, err
	}
	return nodes, nil
}

// checkClusterPorts refuses two nodes on one host whose ports collide.
func checkClusterPorts(nodes []ClusterNode) error {
	used := map[string]string{}
	seen := map[ClusterNode]bool{}
	for _, n := range nodes {
		if seen[n] {
			return fmt.Errorf("--cluster lists %s twice", net.JoinHostPort(n.Host, strconv.Itoa(n.Port)))
		}
		seen[n] = true
		for _, u := range []struct {
			port int
			what string
		}{{n.Port, "client"}, {n.Port + RoutePortOffset, "route"}, {n.Port + MonitorPortOffset, "monitoring"}} {
			key := net.JoinHostPort(n.Host, strconv.Itoa(u.port))
			who := u.what + " port of " + net.JoinHostPort(n.Host, strconv.Itoa(n.Port))
			if prev, ok := used[key]; ok {
				return fmt.Errorf("--cluster: %s is both the %s and the %s", key, prev, who)
			}
			used[key] = who
		}
	}
	return nil
}

// ClusterNodeDir is the directory of node i (0-based) under DIR: its
// nats-server.conf, its resolver's jwt/ and its jetstream/ store.
func ClusterNodeDir(dir string, i int) string { return filepath.Join(dir, clusterNodeName(i)) }

// InitCluster is Init for a cluster: the same keys, broker.env and
// scaler.env with every node's URL in HOTTOPIC_NATS_URL, operator.nk, and
// per node DIR/hottopic-N/nats-server.conf (start node N with
// `nats-server -c DIR/hottopic-N/nats-server.conf`). With withTLS, clients
// and routes use TLS: the CA under DIR/tls, each node's certificate (for
// its host) under DIR/hottopic-N/tls, tls:// URLs. It refuses a directory
// that holds any of them, and writes nothing on a bad node list.
func InitCluster(dir string, nodes []ClusterNode, withTLS bool) error {
	if len(nodes) < 3 || len(nodes)%2 == 0 {
		return fmt.Errorf("a cluster needs an odd number of nodes, at least 3, got %d", len(nodes))
	}
	if err := checkClusterPorts(nodes); err != nil {
		return err
	}
	for i, n := range nodes {
		if withTLS {
			if err := certHost(n.Host); err != nil {
				return err
			}
		}
		p := ClusterNodeDir(dir, i)
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s already exists: init writes new keys and never overwrites them", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.URL()
	}
	return Init(dir, InitOptions{NATSURL: strings.Join(urls, ","), TLS: withTLS, cluster: nodes})
}

// writeClusterConfs writes each node's directory and configuration (with
// ca, its certificate too), adding what it made to *written (removed if
// Init fails later).
func writeClusterConfs(abs string, nodes []ClusterNode, ca *certAuthority, op natsconf.Operator, written *[]string) error {
	password := make([]byte, 24)
	if _, err := rand.Read(password); err != nil {
		return err
	}
	auth := natsconf.RouteAuth{User: "hottopic-route", Password: hex.EncodeToString(password)}
	confs := make([]natsconf.Node, len(nodes))
	for i, n := range nodes {
		d := ClusterNodeDir(abs, i)
		confs[i] = natsconf.Node{
			Name: clusterNodeName(i), Host: n.Host, ClientPort: n.Port,
			ClusterPort: n.Port + RoutePortOffset, HTTPPort: n.Port + MonitorPortOffset,
			StoreDir: filepath.Join(d, jetstreamDir),
		}
	}
	tlsNote := ""
	if ca != nil {
		tlsNote = "\nClients and routes use TLS: tls/ holds this node's certificate and key\n(0600) and the CA's certificate, which routes verify both ways."
	}
	for i := range nodes {
		d := ClusterNodeDir(abs, i)
		*written = append(*written, d)
		if err := os.MkdirAll(filepath.Join(d, resolverDir), 0o700); err != nil {
			return err
		}
		if ca != nil {
			files, err := ca.writeServerTLS(d, []string{nodes[i].Host}, time.Now())
			if err != nil {
				return err
			}
			confs[i].TLS = &files
		}
		nop := op
		nop.ResolverDir = filepath.Join(d, resolverDir)
		nop.SyncInterval = resolverSyncInterval
		header := fmt.Sprintf(`nats-server configuration of node %[1]s of %[2]d, written by hottopic-broker init --cluster.
Start: nats-server -c %[3]s  (-a ADDR overrides the client address)
Operator mode: every account is a JWT signed by the operator "hottopic"; the
broker pushes one account per event bus to any node, and the full resolver of
every node stores it. Routes require the password below, so only these nodes
form the cluster: keep this file private (mode 0600).%[4]s`, confs[i].Name, len(nodes), filepath.Join(d, ServerConfFile), tlsNote)
		conf := natsconf.OperatorNode(header, ClusterName, confs[i], confs, nop, auth)
		if err := os.WriteFile(filepath.Join(d, ServerConfFile), []byte(conf), 0o600); err != nil {
			return err
		}
	}
	return nil
}
