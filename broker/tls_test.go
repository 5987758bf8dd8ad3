package broker_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"gopkg.in/yaml.v3"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// certFor reads dir/tls/server.pem and checks it against the CA in
// caFile for every name, as a client and as a route peer; it returns the
// certificate.
func certFor(t *testing.T, dir, caFile string, names ...string) *x509.Certificate {
	t.Helper()
	Expect := NewWithT(t).Expect
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, broker.TLSDir, broker.ServerCertFile), filepath.Join(dir, broker.TLSDir, broker.ServerKeyFile))
	Expect(err).NotTo(HaveOccurred(), "the certificate and its key")
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	Expect(err).NotTo(HaveOccurred())
	caPEM, err := os.ReadFile(caFile)
	Expect(err).NotTo(HaveOccurred())
	roots := x509.NewCertPool()
	Expect(roots.AppendCertsFromPEM(caPEM)).To(BeTrue())
	for _, name := range names {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
			Expect(err).NotTo(HaveOccurred(), "%s, usage %v", name, usage)
		}
	}
	Expect(cert.PublicKeyAlgorithm).To(Equal(x509.ECDSA))
	return cert
}

// modes checks the mode of each path.
func modes(t *testing.T, want os.FileMode, paths ...string) {
	t.Helper()
	for _, p := range paths {
		fi, err := os.Stat(p)
		NewWithT(t).Expect(err).NotTo(HaveOccurred())
		NewWithT(t).Expect(fi.Mode().Perm()).To(Equal(want), p)
	}
}

func TestInitTLS(t *testing.T) {
	Expect := NewWithT(t).Expect
	dir := t.TempDir()
	Expect(broker.Init(dir, broker.InitOptions{TLS: true, Port: 4333})).To(Succeed())
	tlsDir := filepath.Join(dir, broker.TLSDir)
	modes(t, 0o700, tlsDir)
	modes(t, 0o600, filepath.Join(tlsDir, broker.CACertFile), filepath.Join(tlsDir, broker.CAKeyFile), filepath.Join(tlsDir, broker.ServerCertFile), filepath.Join(tlsDir, broker.ServerKeyFile))
	cert := certFor(t, dir, filepath.Join(tlsDir, broker.CACertFile), "127.0.0.1", "localhost")
	Expect(cert.DNSNames).To(Equal([]string{"localhost"}))
	Expect(cert.IPAddresses).To(HaveLen(1))

	caPEM, _ := os.ReadFile(filepath.Join(tlsDir, broker.CACertFile))
	for _, f := range []string{broker.BrokerEnvFile, broker.ScalerEnvFile} {
		env := readEnv(t, filepath.Join(dir, f))
		Expect(env[cfenv.EnvNATSURL]).To(Equal("tls://127.0.0.1:4333"), f)
		Expect(env[cfenv.EnvNATSCACert]).To(Equal(string(caPEM)), "%s: the CA's certificate read back by ReadEnvFile", f)

		// The README's `sed -e '/^#/d' -e 's/=/: /'` makes a vars file for
		// cf push: YAML, whose double-quoted strings take the same escapes.
		raw, _ := os.ReadFile(filepath.Join(dir, f))
		var vars []string
		for _, l := range strings.Split(string(raw), "\n") {
			if !strings.HasPrefix(l, "#") {
				vars = append(vars, strings.Replace(l, "=", ": ", 1))
			}
		}
		var y map[string]string
		Expect(yaml.Unmarshal([]byte(strings.Join(vars, "\n")), &y)).To(Succeed())
		Expect(y[cfenv.EnvNATSCACert]).To(Equal(string(caPEM)), f)
	}
	env := readEnv(t, filepath.Join(dir, broker.BrokerEnvFile))
	cfg, err := broker.ConfigFromEnv(func(k string) string { return env[k] })
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg.NATS.CACert).To(Equal(strings.TrimSpace(string(caPEM))))
	Expect(cfg.BindingURLs).To(Equal([]string{"tls://127.0.0.1:4333"}))
	env[broker.EnvBindingURLs] = "nats://apps.internal:4222,wss://ws.internal"
	cfg, err = broker.ConfigFromEnv(func(k string) string { return env[k] })
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg.BindingURLs).To(Equal([]string{"tls://apps.internal:4222", "wss://ws.internal"}), "with a CA, bindings get tls://")
	env[cfenv.EnvNATSCACert] = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----"
	_, err = broker.ConfigFromEnv(func(k string) string { return env[k] })
	Expect(err).To(MatchError(HavePrefix(cfenv.EnvNATSCACert + " holds no PEM certificate")))

	conf, _ := os.ReadFile(filepath.Join(dir, broker.ServerConfFile))
	caKey, _ := os.ReadFile(filepath.Join(tlsDir, broker.CAKeyFile))
	Expect(string(conf)).NotTo(ContainSubstring(broker.CAKeyFile))
	for _, f := range []string{broker.BrokerEnvFile, broker.ScalerEnvFile, broker.ServerConfFile} {
		raw, _ := os.ReadFile(filepath.Join(dir, f))
		Expect(string(raw)).NotTo(ContainSubstring(strings.Split(string(caKey), "\n")[1]), "%s holds nothing of the CA's key", f)
	}
	o, err := server.ProcessConfigFile(filepath.Join(dir, broker.ServerConfFile))
	Expect(err).NotTo(HaveOccurred())
	Expect(o.TLSConfig).NotTo(BeNil())
	Expect(o.TLSVerify).To(BeFalse(), "clients authenticate with their JWT, not a certificate")

	// Another host: the certificate names it, and no loopback name.
	other := t.TempDir()
	Expect(broker.Init(other, broker.InitOptions{TLS: true, NATSURL: "nats://nats.internal:4222"})).To(Succeed())
	cert = certFor(t, other, filepath.Join(other, broker.TLSDir, broker.CACertFile), "nats.internal")
	Expect(cert.DNSNames).To(Equal([]string{"nats.internal"}))
	Expect(cert.IPAddresses).To(BeEmpty())
	Expect(readEnv(t, filepath.Join(other, broker.BrokerEnvFile))[cfenv.EnvNATSURL]).To(Equal("tls://nats.internal:4222"))

	// Without --tls: no tls/, no CA variable.
	plain, env := initEnv(t)
	_, err = os.Stat(filepath.Join(plain, broker.TLSDir))
	Expect(os.IsNotExist(err)).To(BeTrue())
	Expect(env).NotTo(HaveKey(cfenv.EnvNATSCACert))

	// What no certificate can name is refused, and nothing is written.
	for url, want := range map[string]string{
		"nats://nats_0.internal:4222": `--tls: "nats_0.internal" is neither an IP address nor a DNS name, so no certificate can name it`,
		"ws://nats.internal:80":       `--tls: the NATS URL "ws://nats.internal:80" must be nats://HOST:PORT or tls://HOST:PORT`,
	} {
		bad := filepath.Join(t.TempDir(), "setup")
		Expect(broker.Init(bad, broker.InitOptions{TLS: true, NATSURL: url})).To(MatchError(want))
		_, err := os.Stat(bad)
		Expect(os.IsNotExist(err)).To(BeTrue(), url)
	}
}

func TestInitClusterTLS(t *testing.T) {
	Expect := NewWithT(t).Expect
	dir := t.TempDir()
	nodes, err := broker.ParseCluster("nats-0.internal,10.0.0.2:5222,[::1]:4222")
	Expect(err).NotTo(HaveOccurred())
	Expect(broker.InitCluster(dir, nodes, true)).To(Succeed())
	env := readEnv(t, filepath.Join(dir, broker.BrokerEnvFile))
	Expect(env[cfenv.EnvNATSURL]).To(Equal("tls://nats-0.internal:4222,tls://10.0.0.2:5222,tls://[::1]:4222"))
	ca := filepath.Join(dir, broker.TLSDir, broker.CACertFile)
	modes(t, 0o600, ca, filepath.Join(dir, broker.TLSDir, broker.CAKeyFile))
	caPEM, _ := os.ReadFile(ca)
	Expect(env[cfenv.EnvNATSCACert]).To(Equal(string(caPEM)))

	for i, host := range []string{"nats-0.internal", "10.0.0.2", "::1"} {
		nd := broker.ClusterNodeDir(dir, i)
		certFor(t, nd, ca, host)
		nodeCA, _ := os.ReadFile(filepath.Join(nd, broker.TLSDir, broker.CACertFile))
		Expect(nodeCA).To(Equal(caPEM), "each node has the CA's certificate")
		_, err := os.Stat(filepath.Join(nd, broker.TLSDir, broker.CAKeyFile))
		Expect(os.IsNotExist(err)).To(BeTrue(), "the CA's key is not in a node's directory")
		modes(t, 0o600, filepath.Join(nd, broker.TLSDir, broker.ServerKeyFile))

		o, err := server.ProcessConfigFile(filepath.Join(nd, broker.ServerConfFile))
		Expect(err).NotTo(HaveOccurred())
		Expect(o.TLSConfig).NotTo(BeNil(), "clients over TLS")
		Expect(o.TLSVerify).To(BeFalse())
		Expect(o.Cluster.TLSConfig).NotTo(BeNil(), "routes over TLS")
		Expect(o.Cluster.TLSConfig.ClientAuth).To(Equal(tls.RequireAndVerifyClientCert), "routes verified both ways")
		Expect(o.Cluster.Username).To(Equal("hottopic-route"), "and the route password kept")
	}
	_, err = os.Stat(filepath.Join(broker.ClusterNodeDir(dir, 0), broker.TLSDir, broker.ServerCertFile))
	Expect(err).NotTo(HaveOccurred())

	nodes, err = broker.ParseCluster("a,b_1,c")
	Expect(err).NotTo(HaveOccurred())
	bad := filepath.Join(t.TempDir(), "setup")
	Expect(broker.InitCluster(bad, nodes, true)).To(MatchError(`--tls: "b_1" is neither an IP address nor a DNS name, so no certificate can name it`))
	_, err = os.Stat(bad)
	Expect(os.IsNotExist(err)).To(BeTrue())
}

// sidecarConnect connects as a bound app's sidecar does: cfenv reads
// VCAP_SERVICES built from the binding's credentials.
func sidecarConnect(t *testing.T, ctx context.Context, creds map[string]any) (*nats.Conn, error) {
	t.Helper()
	vcap := vcapServices(creds)
	cfg, err := cfenv.NATSFromEnv(func(k string) string {
		if k == "VCAP_SERVICES" {
			return vcap
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := cfenv.Connect(cctx, cfg, "test-sidecar", nats.MaxReconnects(0))
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

// publishOverTLS publishes to orders on nc and checks the connection is TLS.
func publishOverTLS(t *testing.T, ctx context.Context, nc *nats.Conn, what string) {
	t.Helper()
	Expect := NewWithT(t).Expect
	st, err := nc.TLSConnectionState()
	Expect(err).NotTo(HaveOccurred(), what)
	Expect(st.HandshakeComplete).To(BeTrue(), what)
	js, _ := jetstream.New(nc)
	ack, err := js.Publish(ctx, orders, []byte("over TLS to "+what))
	Expect(err).NotTo(HaveOccurred(), what)
	Expect(ack.Stream).NotTo(BeEmpty())
}

// plaintextRefused speaks the NATS protocol in clear to addr: the server
// asks for TLS (in its INFO, if it sends one) and closes the connection
// instead of answering the PING. It returns what the server sent.
func plaintextRefused(t *testing.T, addr string) string {
	t.Helper()
	Expect := NewWithT(t).Expect
	conn, err := net.Dial("tcp", addr)
	Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	// A bound only for a broken server; the server closes at once.
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	_, err = conn.Write([]byte("CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n"))
	Expect(err).NotTo(HaveOccurred())
	got, err := io.ReadAll(conn)
	var ne net.Error
	Expect(errors.As(err, &ne) && ne.Timeout()).To(BeFalse(), "the server closes a plaintext connection")
	Expect(string(got)).NotTo(ContainSubstring("PONG"))
	if strings.HasPrefix(string(got), "INFO ") {
		Expect(string(got)).To(ContainSubstring(`"tls_required":true`))
	}
	return string(got)
}

func TestTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and the broker")
	}
	Expect := NewWithT(t).Expect
	ctx := context.Background()
	s := startSystem(t, "--tls")
	Expect(s.natsURL).To(HavePrefix("tls://"))
	caPEM, err := os.ReadFile(filepath.Join(s.dir, broker.TLSDir, broker.CACertFile))
	Expect(err).NotTo(HaveOccurred())

	// The broker (broker.env) and the scaler's connection (scaler.env)
	// reach the server over TLS: it provisions, binds, and the bus's
	// stream is made.
	s.provision("bus-1", orders)
	app := s.bind("bus-1", "bind-1", "app-1")
	Expect(app["uri"]).To(Equal(s.natsURL))
	Expect(app["ca_cert"]).To(Equal(strings.TrimSpace(string(caPEM))))
	key := s.bind("bus-1", "key-1", "")
	Expect(key["ca_cert"]).To(Equal(app["ca_cert"]), "service keys too")
	s.ordersStream(ctx, "bus-1")

	for what, creds := range map[string]map[string]any{"the app binding": app, "the service key": key} {
		nc, err := sidecarConnect(t, ctx, creds)
		Expect(err).NotTo(HaveOccurred(), what)
		publishOverTLS(t, ctx, nc, what)
	}
	// Its permissions are the same as without TLS.
	s.mustDial(app).deniedSub(t, orders)

	Expect(plaintextRefused(t, strings.TrimPrefix(s.natsURL, "tls://"))).To(HavePrefix("INFO "), "clients are told TLS is required")

	// A client that does not trust the CA refuses the server.
	noCA := map[string]any{}
	for k, v := range app {
		if k != "ca_cert" {
			noCA[k] = v
		}
	}
	_, err = s.dial(noCA)
	Expect(err).To(MatchError(ContainSubstring("certificate signed by unknown authority")))
}

func TestClusterTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-server processes and the broker")
	}
	Expect := NewWithT(t).Expect
	ctx := context.Background()
	// The broker is ready once its state buckets have 3 replicas: the
	// nodes found each other over TLS routes.
	s := startClusterSystem(t, "--tls")
	Expect(s.natsURL).To(HavePrefix("tls://"))

	s.provision("bus-1", orders)
	app := s.bind("bus-1", "bind-1", "app-1")
	Expect(app["urls"]).To(Equal(s.natsURL))
	Expect(app["ca_cert"]).NotTo(BeEmpty())
	info := s.ordersStream(ctx, "bus-1")
	Expect(info.Config.Replicas).To(Equal(3))
	Expect(info.Cluster.Replicas).To(HaveLen(2), "a replica on each of the other nodes")

	for _, n := range s.nodes {
		nc, err := sidecarConnect(t, ctx, at(app, n))
		Expect(err).NotTo(HaveOccurred(), n.name)
		Expect(nc.ConnectedUrl()).To(Equal(n.url()))
		publishOverTLS(t, ctx, nc, n.name)
	}
	// Neither a client nor a route in clear.
	Expect(plaintextRefused(t, strings.TrimPrefix(s.nodes[0].url(), "tls://"))).To(HavePrefix("INFO "))
	plaintextRefused(t, fmt.Sprintf("127.0.0.1:%d", s.nodes[0].port+broker.RoutePortOffset))
}
