// Package natsconf writes the configuration of one node of a JetStream
// cluster: on loopback, the same for `hottopic dev --cluster` and the tests'
// clusters of real nats-server processes (ClusterNode); and in operator mode
// across hosts, for `hottopic-broker init --cluster` (OperatorNode).
package natsconf

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Node is one nats-server of a cluster.
type Node struct {
	Name string // server_name
	// Host is the address clients and the other nodes reach the node at
	// (OperatorNode only; ClusterNode's nodes are all on 127.0.0.1).
	Host        string
	ClientPort  int
	HTTPPort    int // monitoring
	ClusterPort int // routes
	StoreDir    string
	LogFile     string // "" logs to stderr
	// TLS: the node's certificate (OperatorNode only); nil for none.
	TLS *TLS
}

// TLS are a server's certificate and key files and the file of the CA
// that signed them and the other nodes' certificates.
type TLS struct{ CertFile, KeyFile, CAFile string }

// TLSBlock is a `tls {}` block, its lines indented by indent: the server
// presents CertFile; with verify (routes) it requires the peer's certificate
// signed by CAFile too. Clients are not asked for one: they authenticate
// with their JWT.
func TLSBlock(t TLS, indent string, verify bool) string {
	var b strings.Builder
	if verify {
		fmt.Fprintf(&b, "%s# routes over TLS, each side's certificate signed by the setup's CA\n", indent)
	} else {
		fmt.Fprintf(&b, "%s# clients connect over TLS (tls://), authenticated by their JWT\n", indent)
	}
	fmt.Fprintf(&b, "%stls: {\n%[1]s  cert_file: %[2]q\n%[1]s  key_file: %[3]q\n", indent, t.CertFile, t.KeyFile)
	if verify {
		fmt.Fprintf(&b, "%s  ca_file: %q\n%[1]s  verify: true\n", indent, t.CAFile)
	}
	// nats-server's default (2 s) is short for a loaded host.
	fmt.Fprintf(&b, "%s  timeout: 5\n%[1]s}\n", indent)
	return b.String()
}

// ClusterNode is the configuration file of node n in the cluster named
// cluster, routed to every node of nodes but itself.
func ClusterNode(cluster string, n Node, nodes []Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: 8MB\n", n.Name, n.ClientPort, n.HTTPPort)
	if n.LogFile != "" {
		fmt.Fprintf(&b, "log_file: %q\n", n.LogFile)
	}
	fmt.Fprintf(&b, "jetstream { store_dir: %q }\ncluster {\n  name: %s\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
		n.StoreDir, cluster, n.ClusterPort, strings.Join(routes(n, nodes, ""), ", "))
	return b.String()
}

// routes are the route URLs of every node but n, with userinfo ("user:pass@"
// or "") before the host.
func routes(n Node, nodes []Node, userinfo string) []string {
	var rs []string
	for _, o := range nodes {
		if o.Name != n.Name {
			host := o.Host
			if host == "" {
				host = "127.0.0.1"
			}
			rs = append(rs, "nats-route://"+userinfo+net.JoinHostPort(host, strconv.Itoa(o.ClusterPort)))
		}
	}
	return rs
}

// Operator is the operator-mode trust every server of a setup shares: the
// operator's JWT, the system account, and the accounts preloaded into the
// full resolver (the others arrive through it, from the broker).
type Operator struct {
	JWT           string
	SystemAccount string
	Preload       []Account
	// ResolverDir is where the full resolver keeps account JWTs.
	ResolverDir string
	// SyncInterval is how often a server compares its JWTs with the other
	// nodes' and takes the newer ones (a Go duration, e.g. "10s").
	SyncInterval string
}

// Account is a preloaded account JWT; Comment names it in the file.
type Account struct{ Comment, PublicKey, JWT string }

// RouteAuth is the user and password every route presents and requires, so
// only the cluster's nodes can join it.
type RouteAuth struct{ User, Password string }

// OperatorNode is the configuration file of node n of an operator-mode
// cluster named cluster: clients on every interface at n.ClientPort
// (advertised as n.Host), monitoring on this host's loopback only, routes at
// n.Host:n.ClusterPort to every other node with auth, the full resolver
// under op.ResolverDir and JetStream under n.StoreDir; with n.TLS, clients
// and routes over TLS (routes verified both ways). header is written first,
// as # comments.
func OperatorNode(header, cluster string, n Node, nodes []Node, op Operator, auth RouteAuth) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
		b.WriteString(strings.TrimRight("# "+l, " ") + "\n")
	}
	fmt.Fprintf(&b, "server_name: %s\nport: %d\nclient_advertise: %q\nhttp: 127.0.0.1:%d\n",
		n.Name, n.ClientPort, net.JoinHostPort(n.Host, strconv.Itoa(n.ClientPort)), n.HTTPPort)
	if n.LogFile != "" {
		fmt.Fprintf(&b, "log_file: %q\n", n.LogFile)
	}
	if n.TLS != nil {
		b.WriteString("\n" + TLSBlock(*n.TLS, "", false))
	}
	fmt.Fprintf(&b, "\noperator: %q\nsystem_account: %s\n\nresolver: {\n  type: full\n  dir: %q\n  allow_delete: true\n  interval: %q\n  timeout: \"5s\"\n}\n\nresolver_preload: {\n",
		op.JWT, op.SystemAccount, op.ResolverDir, op.SyncInterval)
	for _, a := range op.Preload {
		fmt.Fprintf(&b, "  # %s\n  %s: %q\n", a.Comment, a.PublicKey, a.JWT)
	}
	fmt.Fprintf(&b, "}\n\njetstream: {\n  store_dir: %q\n}\n\ncluster: {\n  name: %s\n  listen: %q\n  authorization: { user: %q, password: %q }\n",
		n.StoreDir, cluster, net.JoinHostPort(n.Host, strconv.Itoa(n.ClusterPort)), auth.User, auth.Password)
	if n.TLS != nil {
		b.WriteString(TLSBlock(*n.TLS, "  ", true))
	}
	b.WriteString("  routes: [\n")
	for _, r := range routes(n, nodes, auth.User+":"+auth.Password+"@") {
		fmt.Fprintf(&b, "    %q\n", r)
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}
