package broker

// TLS for `hottopic-broker init --tls`: a CA made offline (its key stays
// with the operator, like operator.nk) and a certificate per server, which
// it presents to clients and, on a cluster, to the other nodes' routes.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hottopic-io/hottopic/internal/natsconf"
)

// Files of init --tls, under DIR/tls (the CA) and, on a cluster, under
// each node's DIR/hottopic-N/tls (its certificate and the CA's).
const (
	TLSDir         = "tls"
	CACertFile     = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server-key.pem"
)

// Validity of what init --tls issues. Renewing them is the operator's (with
// the CA's key, or a new init).
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 2 * 365 * 24 * time.Hour
)

// dnsName is a host name a certificate can name: dot-separated labels of
// letters, digits and inner hyphens.
var dnsName = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// certHost refuses a host no certificate can name (one line).
func certHost(host string) error {
	if net.ParseIP(host) != nil || (len(host) <= 253 && dnsName.MatchString(host)) {
		return nil
	}
	return fmt.Errorf("--tls: %q is neither an IP address nor a DNS name, so no certificate can name it", host)
}

// certNames are the subject alternative names of a server reached at host:
// the host, and the other loopback name when it is 127.0.0.1 or localhost.
func certNames(host string) []string {
	if host == "127.0.0.1" || strings.EqualFold(host, "localhost") {
		return []string{"127.0.0.1", "localhost"}
	}
	return []string{host}
}

// tlsURLs turns init's comma-separated NATS URLs into tls:// ones and
// returns their hosts; only nats:// and tls:// URLs with a host a
// certificate can name are accepted.
func tlsURLs(list string) (string, []string, error) {
	var urls, hosts []string
	for _, raw := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
			return "", nil, fmt.Errorf("--tls: the NATS URL %q must be nats://HOST:PORT or tls://HOST:PORT", strings.TrimSpace(raw))
		}
		if err := certHost(u.Hostname()); err != nil {
			return "", nil, err
		}
		u.Scheme = "tls"
		urls, hosts = append(urls, u.String()), append(hosts, u.Hostname())
	}
	return strings.Join(urls, ","), hosts, nil
}

// certAuthority is the CA of one setup.
type certAuthority struct {
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
	certPEM, keyPEM []byte
}

func newCA(now time.Time) (*certAuthority, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: "hottopic NATS CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(caValidity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := sign(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &certAuthority{cert: cert, key: key, certPEM: certPEM(der), keyPEM: keyPEM}, nil
}

// issue makes a server certificate for hosts (IP addresses or DNS names),
// good for serving clients and routes and for dialling routes.
func (ca *certAuthority) issue(hosts []string, now time.Time) (certPEMs, keyPEM []byte, err error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: hosts[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(serverValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := sign(tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM(der), keyPEM, nil
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// sign makes tmpl's certificate, with a random serial number, signed by
// parent's key.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writeCA writes the CA's certificate and key under dir/tls (mode 0700,
// files 0600).
func (ca *certAuthority) writeCA(dir string) error {
	d := filepath.Join(dir, TLSDir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d, CACertFile), ca.certPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d, CAKeyFile), ca.keyPEM, 0o600)
}

// writeServerTLS writes, under dir/tls (mode 0700, files 0600), a server
// certificate for hosts, its key and the CA's certificate; it returns the
// files for the server's configuration.
func (ca *certAuthority) writeServerTLS(dir string, hosts []string, now time.Time) (natsconf.TLS, error) {
	d := filepath.Join(dir, TLSDir)
	files := natsconf.TLS{CertFile: filepath.Join(d, ServerCertFile), KeyFile: filepath.Join(d, ServerKeyFile), CAFile: filepath.Join(d, CACertFile)}
	var names []string
	for _, h := range hosts {
		names = append(names, certNames(h)...)
	}
	cert, key, err := ca.issue(dedupe(names), now)
	if err != nil {
		return files, err
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return files, err
	}
	for _, f := range []struct {
		path    string
		content []byte
	}{{files.CAFile, ca.certPEM}, {files.CertFile, cert}, {files.KeyFile, key}} {
		if err := os.WriteFile(f.path, f.content, 0o600); err != nil {
			return files, err
		}
	}
	return files, nil
}

func dedupe(names []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if k := strings.ToLower(n); !seen[k] {
			seen[k] = true
			out = append(out, n)
		}
	}
	return out
}
