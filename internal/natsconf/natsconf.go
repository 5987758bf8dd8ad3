// Package natsconf writes the configuration of one node of a JetStream
// cluster on loopback, the same for `hottopic dev --cluster` and the tests'
// clusters of real nats-server processes.
package natsconf

import (
	"fmt"
	"strings"
)

// Node is one nats-server of a cluster on 127.0.0.1.
type Node struct {
	Name        string // server_name
	ClientPort  int
	HTTPPort    int // monitoring
	ClusterPort int // routes
	StoreDir    string
	LogFile     string // "" logs to stderr
}

// ClusterNode is the configuration file of node n in the cluster named
// cluster, routed to every node of nodes but itself.
func ClusterNode(cluster string, n Node, nodes []Node) string {
	var routes []string
	for _, o := range nodes {
		if o.Name != n.Name {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.ClusterPort))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: 8MB\n", n.Name, n.ClientPort, n.HTTPPort)
	if n.LogFile != "" {
		fmt.Fprintf(&b, "log_file: %q\n", n.LogFile)
	}
	fmt.Fprintf(&b, "jetstream { store_dir: %q }\ncluster {\n  name: %s\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
		n.StoreDir, cluster, n.ClusterPort, strings.Join(routes, ", "))
	return b.String()
}
