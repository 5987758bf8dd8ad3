package broker_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
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
