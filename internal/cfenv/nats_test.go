package cfenv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/natstest"
)

func TestNATSConn(t *testing.T) {
	spec.Run(t, "cfenv NATS", testNATSConn, spec.Report(report.Terminal{}))
}

// vcap builds VCAP_SERVICES with one hottopic-tagged service.
func vcap(creds map[string]string) string {
	b, _ := json.Marshal(map[string]any{"user-provided": []any{map[string]any{
		"name": "events", "label": "user-provided", "tags": []string{"hottopic"}, "credentials": creds,
	}}})
	return string(b)
}

func testNATSConn(t *testing.T, when spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	connect := func(getenv func(string) string) error {
		cfg, err := cfenv.NATSFromEnv(getenv)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		nc, err := cfenv.Connect(ctx, cfg, "test")
		if err != nil {
			return err
		}
		defer nc.Close()
		return nc.Flush()
	}

	when("configuration", func() {
		it("needs a service or HOTTOPIC_NATS_URL", func() {
			_, err := cfenv.NATSFromEnv(env(nil))
			Expect(errors.Is(err, cfenv.ErrNoNATS)).To(BeTrue())
			Expect(err.Error()).To(ContainSubstring("HOTTOPIC_NATS_URL"))
		})

		it("lets HOTTOPIC_NATS_URL replace the service's URLs and keeps its credentials", func() {
			cfg, err := cfenv.NATSFromEnv(env(map[string]string{
				"VCAP_SERVICES":     vcap(map[string]string{"uri": "nats://far:4222", "token": "t0k"}),
				"HOTTOPIC_NATS_URL": "127.0.0.1:4222",
			}))
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.URLs).To(Equal([]string{"nats://127.0.0.1:4222"}))
			Expect(cfg.Options).To(HaveLen(1))
		})

		it("reads urls lists and refuses bad URLs without showing secrets", func() {
			cfg, err := cfenv.NATSFromEnv(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"urls": "nats://a:1, nats://b:2"})}))
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.URLs).To(Equal([]string{"nats://a:1", "nats://b:2"}))

			_, err = cfenv.NATSFromEnv(env(map[string]string{"HOTTOPIC_NATS_URL": "http://user:pw@host:80"}))
			Expect(err).To(MatchError(ContainSubstring(`scheme "http"`)))

			_, err = cfenv.NATSFromEnv(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"token": "x"})}))
			Expect(err).To(MatchError(`NATS service "events" has no "uri" or "urls" credential`))
		})

		it("refuses malformed secrets with a line that does not contain them", func() {
			for key, val := range map[string]string{"nkey_seed": "SUANOTASEED", "creds": "garbage-creds", "ca_cert": "not-a-pem"} {
				_, err := cfenv.NATSFromEnv(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": "nats://h:1", key: val})}))
				Expect(err).To(MatchError(ContainSubstring(key)))
				Expect(err.Error()).NotTo(ContainSubstring(val))
			}
		})

		it("reads the CA of HOTTOPIC_NATS_CA_CERT, which wins over the service's ca_cert", func() {
			caPEM, _ := makeCA(t)
			otherCA, _ := makeCA(t)
			cfg, err := cfenv.NATSFromEnv(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": "tls://h:1", "ca_cert": otherCA})}))
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.CACert).To(Equal(otherCA))
			cfg, err = cfenv.NATSFromEnv(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": "tls://h:1", "ca_cert": otherCA}), "HOTTOPIC_NATS_CA_CERT": strings.ReplaceAll(caPEM, "\n", `\n`)}))
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.CACert).To(Equal(caPEM))
			cfg, err = cfenv.NATSFromEnv(env(map[string]string{"HOTTOPIC_NATS_URL": "tls://h:1"}))
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.CACert).To(BeEmpty())

			_, err = cfenv.NATSFromEnv(env(map[string]string{"HOTTOPIC_NATS_URL": "tls://h:1", "HOTTOPIC_NATS_CA_CERT": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----"}))
			Expect(err).To(MatchError("HOTTOPIC_NATS_CA_CERT holds no PEM certificate: give the CA's certificate (tls/ca.pem of hottopic-broker init --tls)"))
		})

		it("makes every inbox under the service's inbox_prefix", func() {
			s := natstest.Run(t)
			cfg, err := cfenv.NATSFromEnv(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL(), "inbox_prefix": "_INBOX_b1"})}))
			Expect(err).NotTo(HaveOccurred())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			nc, err := cfenv.Connect(ctx, cfg, "test")
			Expect(err).NotTo(HaveOccurred())
			defer nc.Close()
			Expect(nc.NewInbox()).To(HavePrefix("_INBOX_b1."))

			_, err = cfenv.NATSFromEnv(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL(), "inbox_prefix": "_INBOX.>"})}))
			Expect(err).To(MatchError(`service "events" credential inbox_prefix "_INBOX.>" must be a subject without wildcards or spaces, not starting or ending with '.'`))
		})

		it("redacts user info", func() {
			Expect(cfenv.RedactURL("nats://user:pw@host:4222")).To(Equal("nats://***@host:4222"))
			Expect(cfenv.RedactURL("tls://tok@host:4222/")).To(Equal("tls://***@host:4222/"))
			cfg, err := cfenv.NATSFromURL("nats://tok@host:4222")
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.String()).NotTo(ContainSubstring("tok"))
		})
	})

	when("connecting with each credential form", func() {
		it("uses user and password", func() {
			s := natstest.Run(t, func(o *server.Options) { o.Username, o.Password = "app", "pa55" })
			Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL(), "user": "app", "password": "pa55"})}))).To(Succeed())

			err := connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL(), "user": "app", "password": "wrong-pa55"})}))
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).NotTo(ContainSubstring("wrong-pa55"))
		})

		it("uses a token", func() {
			s := natstest.Run(t, func(o *server.Options) { o.Authorization = "s3cr3t-token" })
			Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL(), "token": "s3cr3t-token"})}))).To(Succeed())
			Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL()})}))).NotTo(Succeed())
		})

		it("uses an nkey seed", func() {
			kp, err := nkeys.CreateUser()
			Expect(err).NotTo(HaveOccurred())
			pub, _ := kp.PublicKey()
			seed, _ := kp.Seed()
			s := natstest.Run(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
			Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL(), "nkey_seed": string(seed)})}))).To(Succeed())
		})

		it("uses the content of a .creds file (operator mode)", func() {
			opKP, _ := nkeys.CreateOperator()
			opPub, _ := opKP.PublicKey()
			opClaims := jwt.NewOperatorClaims(opPub)
			opJWT, err := opClaims.Encode(opKP)
			Expect(err).NotTo(HaveOccurred())
			opDecoded, err := jwt.DecodeOperatorClaims(opJWT)
			Expect(err).NotTo(HaveOccurred())

			accKP, _ := nkeys.CreateAccount()
			accPub, _ := accKP.PublicKey()
			accJWT, err := jwt.NewAccountClaims(accPub).Encode(opKP)
			Expect(err).NotTo(HaveOccurred())

			userKP, _ := nkeys.CreateUser()
			userPub, _ := userKP.PublicKey()
			userSeed, _ := userKP.Seed()
			userJWT, err := jwt.NewUserClaims(userPub).Encode(accKP)
			Expect(err).NotTo(HaveOccurred())
			creds, err := jwt.FormatUserConfig(userJWT, userSeed)
			Expect(err).NotTo(HaveOccurred())

			resolver := &server.MemAccResolver{}
			Expect(resolver.Store(accPub, accJWT)).To(Succeed())
			s := natstest.Run(t, func(o *server.Options) {
				o.JetStream = false
				o.TrustedOperators = []*jwt.OperatorClaims{opDecoded}
				o.AccountResolver = resolver
			})
			Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL(), "creds": string(creds)})}))).To(Succeed())
			Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": s.URL()})}))).NotTo(Succeed())
		})

		it("trusts a CA certificate for TLS", func() {
			caPEM, serverCert := makeCA(t)
			s := natstest.Run(t, func(o *server.Options) {
				o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}
				o.TLS = true
			})
			url := fmt.Sprintf("tls://127.0.0.1:%d", s.Port())
			Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": url, "ca_cert": caPEM})}))).To(Succeed())
			err := connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": url})}))
			Expect(err).To(MatchError(ContainSubstring("certificate")))

			// HOTTOPIC_NATS_CA_CERT, with its line breaks as they are or
			// written \n (as init's env files hold them), and over a
			// service's ca_cert of another CA.
			otherCA, _ := makeCA(t)
			for _, ca := range []string{caPEM, strings.ReplaceAll(caPEM, "\n", `\n`)} {
				Expect(connect(env(map[string]string{"HOTTOPIC_NATS_URL": url, "HOTTOPIC_NATS_CA_CERT": ca}))).To(Succeed())
				Expect(connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": url, "ca_cert": otherCA}), "HOTTOPIC_NATS_CA_CERT": ca}))).To(Succeed())
			}
			err = connect(env(map[string]string{"VCAP_SERVICES": vcap(map[string]string{"uri": url, "ca_cert": caPEM}), "HOTTOPIC_NATS_CA_CERT": otherCA}))
			Expect(err).To(MatchError(ContainSubstring("certificate")), "the variable wins over the service's ca_cert")
		})
	})
}

// makeCA returns a CA certificate (PEM) and a server certificate for 127.0.0.1 it signed.
func makeCA(t *testing.T) (string, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hottopic test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	return strings.TrimSpace(caPEM), tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
}
