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

// initEnv runs Init in a temp dir and returns broker.env as a map.
func initEnv(t *testing.T) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	if err := broker.Init(dir, broker.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	env, err := broker.ReadEnvFile(filepath.Join(dir, broker.BrokerEnvFile))
	if err != nil {
		t.Fatal(err)
	}
	return dir, env
}

func TestInit(t *testing.T) {
	Expect := NewWithT(t).Expect
	dir, env := initEnv(t)
	for _, f := range []string{broker.ServerConfFile, broker.BrokerEnvFile, broker.ScalerEnvFile, broker.OperatorFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		Expect(err).NotTo(HaveOccurred())
		Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)), f)
	}
	_, err := broker.ConfigFromEnv(func(k string) string { return env[k] })
	Expect(err).NotTo(HaveOccurred(), "broker.env is a complete configuration")
	Expect(env["HOTTOPIC_NATS_URL"]).To(Equal("nats://127.0.0.1:4222"))

	scaler, err := os.ReadFile(filepath.Join(dir, broker.ScalerEnvFile))
	Expect(err).NotTo(HaveOccurred())
	Expect(string(scaler)).To(ContainSubstring(broker.EnvInternalAccountKey + "="))
	Expect(string(scaler)).NotTo(ContainSubstring(env[broker.EnvInternalAccountKey]), "the scaler has its own signing key")
	Expect(string(scaler)).NotTo(ContainSubstring(broker.EnvOperatorSigningKey))

	conf, err := os.ReadFile(filepath.Join(dir, broker.ServerConfFile))
	Expect(err).NotTo(HaveOccurred())
	for _, secret := range []string{env[broker.EnvOperatorSigningKey], env[broker.EnvSystemAccountKey], env[broker.EnvInternalAccountKey]} {
		Expect(string(conf)).NotTo(ContainSubstring(secret), "the server's configuration holds no seed")
	}

	err = broker.Init(dir, broker.InitOptions{})
	Expect(err).To(MatchError(ContainSubstring("nats-server.conf already exists: init writes new keys and never overwrites them")))
}

func TestConfigFromEnv(t *testing.T) {
	Expect := NewWithT(t).Expect
	_, env := initEnv(t)
	for key, want := range map[string]string{
		broker.EnvUsername:           "BROKER_USERNAME is not set",
		broker.EnvOperatorSigningKey: "HOTTOPIC_OPERATOR_SIGNING_KEY is not set",
		broker.EnvStateKey:           "HOTTOPIC_STATE_KEY must be 32 bytes in base64 (hottopic-broker init writes one), got 0 characters",
		"HOTTOPIC_NATS_URL":          "no NATS server configured",
	} {
		_, err := broker.ConfigFromEnv(func(k string) string {
			if k == key {
				return ""
			}
			return env[k]
		})
		Expect(err).To(MatchError(ContainSubstring(want)), key)
	}
	for key, bad := range map[string]string{
		broker.EnvPassword:           "short",
		broker.EnvOperatorSigningKey: env[broker.EnvSystemAccountKey],
		broker.EnvSystemAccountKey:   "SANOTASEED",
		broker.EnvInternalAccount:    "UABC",
		broker.EnvBindingURLs:        "http://x",
		broker.EnvBusDisk:            "10GB",
		broker.EnvBusMemory:          "9999999TiB",
		broker.EnvBusConnections:     "many",
		broker.EnvBusConsumers:       "-2",
		broker.EnvBusStreams:         "1.5",
		broker.EnvBusSubscriptions:   "0",
	} {
		_, err := broker.ConfigFromEnv(func(k string) string {
			if k == key {
				return bad
			}
			return env[k]
		})
		Expect(err).To(MatchError(HavePrefix(key)), key)
		Expect(strings.Count(err.Error(), "\n")).To(Equal(0))
		if len(bad) > 12 {
			Expect(err.Error()).NotTo(ContainSubstring(bad), "no secret in the error")
		}
	}
}

func TestBusLimitsFromEnv(t *testing.T) {
	Expect := NewWithT(t).Expect
	_, env := initEnv(t)
	cfg, err := broker.ConfigFromEnv(func(k string) string { return env[k] })
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg.BusLimits).To(Equal(broker.DefaultBusLimits()))
	env[broker.EnvBusDisk] = "2 TiB"
	env[broker.EnvBusMemory] = "1048576"
	env[broker.EnvBusConnections] = "-1"
	env[broker.EnvBusConsumers] = " 7 "
	cfg, err = broker.ConfigFromEnv(func(k string) string { return env[k] })
	Expect(err).NotTo(HaveOccurred())
	want := broker.DefaultBusLimits()
	want.Disk, want.Memory, want.Connections, want.Consumers = 2<<40, 1<<20, -1, 7
	Expect(cfg.BusLimits).To(Equal(want))
	Expect(cfg.BusLimits.String()).To(Equal("2 TiB of disk, 1 MiB of memory, unlimited connections, 20000 subscriptions, 1000 streams, 7 consumers"))
}

func TestCommandErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs hottopic-broker")
	}
	Expect := NewWithT(t).Expect
	bin := proctest.Build(t, "./cmd/hottopic-broker")
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		return proctest.Run(t, cmd, time.Minute)
	}
	out, code := run(nil)
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: BROKER_USERNAME is not set\n"))

	_, env := initEnv(t)
	var vars []string
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	out, code = run(append(vars, "PORT=80x"))
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: PORT must be a port number from 1 to 65535, got \"80x\"\n"))

	out, code = run(nil, "init")
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: init takes one directory: hottopic-broker init [--tls] [--port N] [--url nats://HOST:PORT] DIR\n"))
	out, code = run(nil, "serve")
	Expect(code).To(Equal(1))
	Expect(out).To(Equal("hottopic-broker: unknown argument \"serve\" (usage: hottopic-broker, or hottopic-broker init [--tls] [--port N] [--url nats://HOST:PORT] DIR)\n"))
}
