package natsconf_test

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/natsconf"
)

// parse reads a written configuration with nats-server's own parser.
func parse(t *testing.T, conf string) *server.Options {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(p)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration: %v\n%s", err, conf)
	}
	return o
}

func TestOperatorNode(t *testing.T) {
	Expect := NewWithT(t).Expect
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	Expect(err).NotTo(HaveOccurred())
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(op)
	Expect(err).NotTo(HaveOccurred())

	dir := t.TempDir()
	nodes := []natsconf.Node{
		{Name: "hottopic-1", Host: "nats-0.internal", ClientPort: 4222, ClusterPort: 6222, HTTPPort: 8222, StoreDir: filepath.Join(dir, "1")},
		{Name: "hottopic-2", Host: "nats-1.internal", ClientPort: 4222, ClusterPort: 6222, HTTPPort: 8222, StoreDir: filepath.Join(dir, "2")},
		{Name: "hottopic-3", Host: "::1", ClientPort: 4223, ClusterPort: 6223, HTTPPort: 8223, StoreDir: filepath.Join(dir, "3")},
	}
	conf := natsconf.OperatorNode("line one\nline two", "hottopic", nodes[0], nodes, natsconf.Operator{
		JWT: opJWT, SystemAccount: sysPub, ResolverDir: filepath.Join(dir, "jwt"), SyncInterval: "10s",
		Preload: []natsconf.Account{{Comment: "SYS", PublicKey: sysPub, JWT: sysJWT}},
	}, natsconf.RouteAuth{User: "route", Password: "0123abcd"})
	Expect(conf).To(HavePrefix("# line one\n# line two\n"))

	o := parse(t, conf)
	Expect(o.ServerName).To(Equal("hottopic-1"))
	Expect(o.Host).To(BeEmpty(), "clients on every interface (the server's default)")
	Expect(o.Port).To(Equal(4222))
	Expect(o.ClientAdvertise).To(Equal("nats-0.internal:4222"))
	Expect(o.HTTPHost).To(Equal("127.0.0.1"), "monitoring on loopback only")
	Expect(o.HTTPPort).To(Equal(8222))
	Expect(o.StoreDir).To(Equal(filepath.Join(dir, "1")))
	Expect(o.TrustedOperators).To(HaveLen(1))
	Expect(o.SystemAccount).To(Equal(sysPub))
	Expect(o.AccountResolver).To(BeAssignableToTypeOf(&server.DirAccResolver{}))
	Expect(o.Cluster.Name).To(Equal("hottopic"))
	Expect(o.Cluster.Host).To(Equal("nats-0.internal"))
	Expect(o.Cluster.Port).To(Equal(6222))
	Expect(o.Cluster.Username).To(Equal("route"))
	Expect(o.Cluster.Password).To(Equal("0123abcd"))
	var routes []string
	for _, r := range o.Routes {
		routes = append(routes, r.String())
	}
	Expect(routes).To(ConsistOf("nats-route://route:0123abcd@nats-1.internal:6222", "nats-route://route:0123abcd@[::1]:6223"))
	Expect(o.Routes[0].User).To(Equal(url.UserPassword("route", "0123abcd")))
}

func TestClusterNode(t *testing.T) {
	Expect := NewWithT(t).Expect
	nodes := []natsconf.Node{
		{Name: "n1", ClientPort: 14222, ClusterPort: 16222, HTTPPort: 18222, StoreDir: "/s/1", LogFile: "/l/1"},
		{Name: "n2", ClientPort: 14223, ClusterPort: 16223, HTTPPort: 18223, StoreDir: "/s/2"},
	}
	o := parse(t, natsconf.ClusterNode("dev", nodes[1], nodes))
	Expect(o.Host).To(Equal("127.0.0.1"))
	Expect(o.Port).To(Equal(14223))
	Expect(o.Cluster.Host).To(Equal("127.0.0.1"))
	Expect(o.Cluster.Port).To(Equal(16223))
	Expect(o.Routes).To(HaveLen(1))
	Expect(o.Routes[0].String()).To(Equal("nats-route://127.0.0.1:16222"))
}

func TestOperatorNodeTLS(t *testing.T) {
	Expect := NewWithT(t).Expect
	files := &natsconf.TLS{CertFile: "/n/tls/server.pem", KeyFile: "/n/tls/server-key.pem", CAFile: "/n/tls/ca.pem"}
	nodes := []natsconf.Node{
		{Name: "hottopic-1", Host: "nats-0.internal", ClientPort: 4222, ClusterPort: 6222, HTTPPort: 8222, StoreDir: "/s/1", TLS: files},
		{Name: "hottopic-2", Host: "nats-1.internal", ClientPort: 4222, ClusterPort: 6222, HTTPPort: 8222, StoreDir: "/s/2"},
	}
	// nats-server's parser, without loading the files it names.
	m, err := conf.Parse(natsconf.OperatorNode("h", "hottopic", nodes[0], nodes, natsconf.Operator{JWT: "op.jwt", SystemAccount: "ASYS", ResolverDir: "/j", SyncInterval: "10s"}, natsconf.RouteAuth{User: "route", Password: "pw"}))
	Expect(err).NotTo(HaveOccurred())
	Expect(m["tls"]).To(Equal(map[string]any{"cert_file": files.CertFile, "key_file": files.KeyFile, "timeout": int64(5)}), "clients: the server's certificate, none asked of them")
	cluster := m["cluster"].(map[string]any)
	Expect(cluster["tls"]).To(Equal(map[string]any{"cert_file": files.CertFile, "key_file": files.KeyFile, "ca_file": files.CAFile, "verify": true, "timeout": int64(5)}), "routes: verified both ways")
	Expect(cluster["routes"]).To(HaveLen(1))
	Expect(cluster["authorization"]).NotTo(BeNil())
}
