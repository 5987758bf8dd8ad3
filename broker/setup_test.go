package broker_test

import (
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/broker"
)

// EnsureInit writes a directory once and reads the same keys back after.
func TestEnsureInitKeepsTheSetup(t *testing.T) {
	g := NewWithT(t)
	dir := filepath.Join(t.TempDir(), "broker")
	first, err := broker.EnsureInit(dir, broker.InitOptions{Port: 4999})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(first.ServerConf).To(Equal(filepath.Join(dir, broker.ServerConfFile)))
	g.Expect(first.BrokerEnv).To(HaveKey(broker.EnvOperatorSigningKey))
	second, err := broker.EnsureInit(dir, broker.InitOptions{Port: 4999})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(second.BrokerEnv).To(Equal(first.BrokerEnv))
	g.Expect(second.ScalerEnv).To(Equal(first.ScalerEnv))

	cfg, err := second.BrokerConfig("nats://127.0.0.1:5111")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cfg.NATS.URLs).To(Equal([]string{"nats://127.0.0.1:5111"}), "the address the server runs on, not the one at init")
	sc, access, err := second.Scaler("nats://127.0.0.1:5111")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(sc.URLs).To(Equal([]string{"nats://127.0.0.1:5111"}))
	g.Expect(sc.Options).To(HaveLen(1), "a user of the internal account")
	g.Expect(access.StateKey).To(Equal(cfg.StateKey))

	g.Expect(os.Remove(filepath.Join(dir, broker.ScalerEnvFile))).To(Succeed())
	_, err = broker.EnsureInit(dir, broker.InitOptions{})
	g.Expect(err).To(MatchError(filepath.Join(dir, broker.ScalerEnvFile) + " is missing beside nats-server.conf: remove the directory to start afresh"))
}
