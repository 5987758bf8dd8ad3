package broker_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/internal/proctest"
)

func TestParseCluster(t *testing.T) {
	Expect := NewWithT(t).Expect
	nodes, err := broker.ParseCluster("nats-0.internal, nats-1.internal:5222,[::1]:4222")
	Expect(err).NotTo(HaveOccurred())
	Expect(nodes).To(Equal([]broker.ClusterNode{{Host: "nats-0.internal", Port: 4222}, {Host: "nats-1.internal", Port: 5222}, {Host: "::1", Port: 4222}}))
	Expect(nodes[2].URL()).To(Equal("nats://[::1]:4222"))

	for spec, want := range map[string]string{
		"a,b":                     "--cluster lists 2 node(s): a JetStream cluster needs an odd number, at least 3, so that a majority survives the loss of one",
		"a,b,c,d":                 "--cluster lists 4 node(s): a JetStream cluster needs an odd number, at least 3, so that a majority survives the loss of one",
		"a,,b":                    `--cluster "a,,b" has an empty entry: give HOST:PORT,HOST:PORT,HOST:PORT`,
		"nats://a:4222,b,c":       `--cluster entry "nats://a:4222" must be HOST or HOST:PORT (no scheme)`,
		"a:61536,b,c":             `--cluster entry "a:61536": the port must be a number from 1 to 61535 (routes use PORT+2000, monitoring PORT+4000)`,
		"a:x,b,c":                 `--cluster entry "a:x": the port must be a number from 1 to 61535 (routes use PORT+2000, monitoring PORT+4000)`,
		":4222,b,c":               `--cluster entry ":4222" has no valid host`,
		"a:4222,a:4222,b":         "--cluster lists a:4222 twice",
		"a:4222,a:6222,b":         "--cluster: a:6222 is both the route port of a:4222 and the client port of a:6222",
		"a:4222,b:4222,a:8222":    "--cluster: a:8222 is both the monitoring port of a:4222 and the client port of a:8222",
		"a:4222,b:4222,c:4222,d,": `--cluster "a:4222,b:4222,c:4222,d," has an empty entry: give HOST:PORT,HOST:PORT,HOST:PORT`,
	} {
		_, err := broker.ParseCluster(spec)
		Expect(err).To(MatchError(want), spec)
	}
}

func TestInitCluster(t *testing.T) {
	Expect := NewWithT(t).Expect
	dir := t.TempDir()
	nodes, err := broker.ParseCluster("nats-0.internal,nats-1.internal,nats-2.internal")
	Expect(err).NotTo(HaveOccurred())
	Expect(broker.InitCluster(dir, nodes, false)).To(Succeed())

	env := readEnv(t, filepath.Join(dir, broker.BrokerEnvFile))
	Expect(env["HOTTOPIC_NATS_URL"]).To(Equal("nats://nats-0.internal:4222,nats://nats-1.internal:4222,nats://nats-2.internal:4222"))
	_, err = broker.ConfigFromEnv(func(k string) string { return env[k] })
	Expect(err).NotTo(HaveOccurred(), "broker.env is a complete configuration")
	Expect(readEnv(t, filepath.Join(dir, broker.ScalerEnvFile))["HOTTOPIC_NATS_URL"]).To(Equal(env["HOTTOPIC_NATS_URL"]))
	_, err = os.Stat(filepath.Join(dir, broker.ServerConfFile))
	Expect(os.IsNotExist(err)).To(BeTrue(), "no single-server configuration")

	var confs []string
	for i := range nodes {
		p := filepath.Join(broker.ClusterNodeDir(dir, i), broker.ServerConfFile)
		fi, err := os.Stat(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)))
		raw, _ := os.ReadFile(p)
		confs = append(confs, string(raw))
	}
	for i, c := range confs {
		Expect(c).To(ContainSubstring("server_name: hottopic-%d\n", i+1))
		Expect(c).To(ContainSubstring("client_advertise: \"nats-%d.internal:4222\"", i))
		Expect(c).To(ContainSubstring("http: 127.0.0.1:8222\n"), "monitoring on loopback only")
		Expect(c).To(ContainSubstring("listen: \"nats-%d.internal:6222\"", i))
		Expect(c).To(ContainSubstring("type: full"))
		Expect(c).To(ContainSubstring("system_account: " + env[broker.EnvSystemAccount]))
		Expect(c).To(ContainSubstring(env[broker.EnvInternalAccount]+": \"ey"), "the internal account is preloaded")
		Expect(c).To(ContainSubstring(filepath.Join(broker.ClusterNodeDir(dir, i), "jetstream")))
		Expect(c).To(ContainSubstring(filepath.Join(broker.ClusterNodeDir(dir, i), "jwt")))
		Expect(strings.Count(c, "nats-route://hottopic-route:")).To(Equal(2), "routes to the two others")
		Expect(c).NotTo(ContainSubstring("@nats-%d.internal", i), "no route to itself")
		for _, secret := range []string{env[broker.EnvOperatorSigningKey], env[broker.EnvSystemAccountKey], env[broker.EnvInternalAccountKey]} {
			Expect(c).NotTo(ContainSubstring(secret), "a node's configuration holds no seed")
		}
	}
	// One route password, the same on every node.
	pw := func(c string) string {
		_, after, _ := strings.Cut(c, `password: "`)
		p, _, _ := strings.Cut(after, `"`)
		return p
	}
	Expect(pw(confs[0])).To(HaveLen(48))
	Expect(pw(confs[1])).To(Equal(pw(confs[0])))

	Expect(broker.InitCluster(dir, nodes, false)).To(MatchError(ContainSubstring("hottopic-1 already exists: init writes new keys and never overwrites them")))
	Expect(broker.Init(dir, broker.InitOptions{})).To(MatchError(ContainSubstring("broker.env already exists")))

	// A directory holding one node's directory gets nothing.
	other := t.TempDir()
	Expect(os.Mkdir(broker.ClusterNodeDir(other, 2), 0o700)).To(Succeed())
	Expect(broker.InitCluster(other, nodes, false)).To(MatchError(ContainSubstring("hottopic-3 already exists")))
	entries, _ := os.ReadDir(other)
	Expect(entries).To(HaveLen(1))
}

func TestInitClusterCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs hottopic-broker")
	}
	Expect := NewWithT(t).Expect
	bin := proctest.Build(t, "./cmd/hottopic-broker")
	dir := filepath.Join(t.TempDir(), "setup")
	run := func(args ...string) (string, int) {
		return proctest.Run(t, exec.Command(bin, args...), time.Minute)
	}
	out, code := run("init", "--cluster", "a,b", dir)
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: --cluster lists 2 node(s): a JetStream cluster needs an odd number, at least 3, so that a majority survives the loss of one\n"))
	out, code = run("init", "--cluster", "", dir)
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: --cluster \"\" has an empty entry: give HOST:PORT,HOST:PORT,HOST:PORT\n"))
	out, code = run("init", "--port", "4223", "--cluster", "a,b,c", dir)
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: --port is for one server: with --cluster, each node's HOST:PORT gives its address\n"))
	out, code = run("init", "--tls", "--cluster", "a,b_1,c", dir)
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: --tls: \"b_1\" is neither an IP address nor a DNS name, so no certificate can name it\n"))
	out, code = run("init", "--tls", "--url", "ws://nats.internal:80", dir)
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: --tls: the NATS URL \"ws://nats.internal:80\" must be nats://HOST:PORT or tls://HOST:PORT\n"))
	_, err := os.Stat(dir)
	Expect(os.IsNotExist(err)).To(BeTrue(), "nothing written")

	out, code = run("init", "--cluster", "a,b,c", dir)
	Expect(code).To(Equal(0), out)
	Expect(out).To(ContainSubstring(filepath.Join(dir, "hottopic-2") + " (nats://b:4222): nats-server -c " + filepath.Join(dir, "hottopic-2", "nats-server.conf")))

	tlsDir := filepath.Join(t.TempDir(), "setup")
	out, code = run("init", "--tls", "--cluster", "a,b,c", tlsDir)
	Expect(code).To(Equal(0), out)
	Expect(out).To(ContainSubstring(filepath.Join(tlsDir, "hottopic-2") + " (tls://b:4222): nats-server -c "))
	Expect(out).To(ContainSubstring("ca-key.pem: keep it offline"))
}
