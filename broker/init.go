package broker

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/natsconf"
)

// Files Init writes in its directory.
const (
	ServerConfFile = "nats-server.conf"
	BrokerEnvFile  = "broker.env"
	ScalerEnvFile  = "scaler.env"
	OperatorFile   = "operator.nk"
	resolverDir    = "jwt"
	jetstreamDir   = "jetstream"
)

// InitOptions shape what Init writes.
type InitOptions struct {
	// NATSURL is the URL broker and scaler reach the server at (default
	// nats://127.0.0.1:4222).
	NATSURL string
	// Port the server listens on (default 4222); -p overrides it at start.
	Port int
	// TLS: clients (and a cluster's routes) over TLS with certificates of
	// a CA made here (DIR/tls); URLs become tls:// and broker.env and
	// scaler.env carry the CA's certificate (cfenv.EnvNATSCACert).
	TLS bool
	// cluster: per-node configurations instead of DIR/nats-server.conf
	// (InitCluster, initcluster.go).
	cluster []ClusterNode
}

// Init writes, offline, everything an operator needs: DIR/nats-server.conf
// (operator mode, the system account, a full resolver under DIR/jwt preloaded
// with the system account and the internal account HOTTOPIC, JetStream under
// DIR/jetstream), DIR/broker.env and DIR/scaler.env (mode 0600), and
// DIR/operator.nk, the operator's identity seed (0600), to keep offline.
// With o.TLS also DIR/tls: the CA (ca.pem, and ca-key.pem to keep offline)
// and the server's certificate. It refuses a directory that already holds
// any of them.
func Init(dir string, o InitOptions) (err error) {
	if o.Port == 0 {
		o.Port = 4222
	}
	if o.NATSURL == "" {
		o.NATSURL = "nats://127.0.0.1:" + strconv.Itoa(o.Port)
	}
	var tlsHosts []string
	if o.TLS {
		if o.NATSURL, tlsHosts, err = tlsURLs(o.NATSURL); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, f := range []string{ServerConfFile, BrokerEnvFile, ScalerEnvFile, OperatorFile, resolverDir, TLSDir} {
		if _, err := os.Stat(filepath.Join(abs, f)); err == nil {
			return fmt.Errorf("%s already exists: init writes new keys and never overwrites them", filepath.Join(dir, f))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	var written []string
	defer func() {
		if err != nil {
			for _, f := range written {
				_ = os.RemoveAll(f)
			}
		}
	}()
	write := func(name, content string) error {
		p := filepath.Join(abs, name)
		written = append(written, p)
		return os.WriteFile(p, []byte(content), 0o600)
	}

	k, err := newInitKeys()
	if err != nil {
		return err
	}
	var (
		ca      *certAuthority
		tlsConf string
	)
	if o.TLS {
		now := time.Now()
		if ca, err = newCA(now); err != nil {
			return err
		}
		written = append(written, filepath.Join(abs, TLSDir))
		if err := ca.writeCA(abs); err != nil {
			return err
		}
		if o.cluster == nil {
			files, err := ca.writeServerTLS(abs, tlsHosts, now)
			if err != nil {
				return err
			}
			tlsConf = "\n" + natsconf.TLSBlock(files, "", false)
		}
	}
	opSigner, _ := nkeys.FromSeed(k.seed(k.opSigning))
	oc := jwt.NewOperatorClaims(k.pub(k.op))
	oc.Name = "hottopic"
	oc.SigningKeys.Add(k.pub(k.opSigning))
	oc.SystemAccount = k.pub(k.sys)
	oc.StrictSigningKeyUsage = true
	opKP := k.op
	opJWT, err := oc.Encode(opKP)
	if err != nil {
		return err
	}
	sc := jwt.NewAccountClaims(k.pub(k.sys))
	sc.Name = "SYS"
	sc.SigningKeys.Add(k.pub(k.sysSigning))
	sc.Exports = jwt.Exports{
		&jwt.Export{Name: "account-monitoring-services", Subject: "$SYS.REQ.ACCOUNT.*.*", Type: jwt.Service, ResponseType: jwt.ResponseTypeStream, AccountTokenPosition: 4},
		&jwt.Export{Name: "account-monitoring-streams", Subject: "$SYS.ACCOUNT.*.>", Type: jwt.Stream, AccountTokenPosition: 3},
	}
	sysJWT, err := sc.Encode(opSigner)
	if err != nil {
		return err
	}
	intJWT, err := internalAccountJWT(k.pub(k.internal), []string{k.pub(k.brokerSigning), k.pub(k.scalerSigning)}, opSigner)
	if err != nil {
		return err
	}

	conf := fmt.Sprintf(`# nats-server configuration written by hottopic-broker init.
# Start: nats-server -c %[1]s  (-a ADDR / -p PORT override the address)
# Operator mode: every account is a JWT signed by the operator "hottopic";
# the Hot Topic broker adds one account per event bus through the resolver.
server_name: hottopic-1
port: %[2]d
%[10]s
operator: %[3]q
system_account: %[4]s

resolver: {
  type: full
  dir: %[5]q
  allow_delete: true
  interval: "2m"
  timeout: "5s"
}

resolver_preload: {
  # SYS: the system account
  %[4]s: %[6]q
  # HOTTOPIC: the broker's and the scaler's state
  %[7]s: %[8]q
}

jetstream: {
  store_dir: %[9]q
}
`, filepath.Join(abs, ServerConfFile), o.Port, opJWT, k.pub(k.sys), filepath.Join(abs, resolverDir), sysJWT, k.pub(k.internal), intJWT, filepath.Join(abs, jetstreamDir), tlsConf)
	if o.cluster != nil {
		err = writeClusterConfs(abs, o.cluster, ca, natsconf.Operator{JWT: opJWT, SystemAccount: k.pub(k.sys), Preload: []natsconf.Account{
			{Comment: "SYS: the system account", PublicKey: k.pub(k.sys), JWT: sysJWT},
			{Comment: "HOTTOPIC: the broker's and the scaler's state", PublicKey: k.pub(k.internal), JWT: intJWT},
		}}, &written)
	} else if err = write(ServerConfFile, conf); err == nil {
		written = append(written, filepath.Join(abs, resolverDir))
		err = os.MkdirAll(filepath.Join(abs, resolverDir), 0o700)
	}
	if err != nil {
		return err
	}

	stateKey := make([]byte, 32)
	password := make([]byte, 24)
	if _, err := rand.Read(stateKey); err != nil {
		return err
	}
	if _, err := rand.Read(password); err != nil {
		return err
	}
	env := func(kv ...string) string {
		var b strings.Builder
		b.WriteString("# written by hottopic-broker init: secrets, keep this file private (mode 0600)\n")
		if ca != nil {
			kv = append(kv, cfenv.EnvNATSCACert, string(ca.certPEM))
		}
		for i := 0; i < len(kv); i += 2 {
			fmt.Fprintf(&b, "%s=%s\n", kv[i], envValue(kv[i+1]))
		}
		return b.String()
	}
	if err := write(BrokerEnvFile, env(
		"HOTTOPIC_NATS_URL", o.NATSURL,
		EnvUsername, "hottopic-broker",
		EnvPassword, hex.EncodeToString(password),
		EnvOperatorSigningKey, string(k.seed(k.opSigning)),
		EnvSystemAccount, k.pub(k.sys),
		EnvSystemAccountKey, string(k.seed(k.sysSigning)),
		EnvInternalAccount, k.pub(k.internal),
		EnvInternalAccountKey, string(k.seed(k.brokerSigning)),
		EnvStateKey, base64.StdEncoding.EncodeToString(stateKey),
	)); err != nil {
		return err
	}
	if err := write(ScalerEnvFile, env(
		"HOTTOPIC_NATS_URL", o.NATSURL,
		EnvInternalAccount, k.pub(k.internal),
		EnvInternalAccountKey, string(k.seed(k.scalerSigning)),
		EnvStateKey, base64.StdEncoding.EncodeToString(stateKey),
	)); err != nil {
		return err
	}
	return write(OperatorFile, "# the operator's identity seed: it can re-sign everything. Keep it offline, not on the servers.\n"+string(k.seed(k.op))+"\n")
}

// envValue is v as a line of an env file: as it is, or, when it has line
// breaks (a PEM certificate), spaces, quotes or backslashes, in double
// quotes with \n, \" and \\ escapes. go-envparse (ReadEnvFile) reads both,
// and the README's sed turns the line into a YAML double-quoted string with
// the same escapes.
func envValue(v string) string {
	if !strings.ContainsAny(v, "\n\"\\ #'") {
		return v
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}

type initKeys struct {
	op, opSigning, sys, sysSigning, internal, brokerSigning, scalerSigning nkeys.KeyPair
}

func newInitKeys() (*initKeys, error) {
	k := &initKeys{}
	var err error
	if k.op, err = nkeys.CreateOperator(); err != nil {
		return nil, err
	}
	if k.opSigning, err = nkeys.CreateOperator(); err != nil {
		return nil, err
	}
	for _, p := range []*nkeys.KeyPair{&k.sys, &k.sysSigning, &k.internal, &k.brokerSigning, &k.scalerSigning} {
		if *p, err = nkeys.CreateAccount(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (k *initKeys) pub(kp nkeys.KeyPair) string  { p, _ := kp.PublicKey(); return p }
func (k *initKeys) seed(kp nkeys.KeyPair) []byte { s, _ := kp.Seed(); return s }
