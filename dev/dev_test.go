//go:build unix

package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/dev/console"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler/api"
)

func TestDev(t *testing.T) {
	spec.Run(t, "Dev", testDev, spec.Report(report.Terminal{}))
}

func testDev(t *testing.T, when spec.G, it spec.S) {
	var (
		dir  string
		opts Options
		out  *gbytes.Buffer
	)

	it.Before(func() {
		RegisterTestingT(t)
		dir = t.TempDir()
		out = gbytes.NewBuffer()
		Expect(os.WriteFile(filepath.Join(dir, "manifest.yml"), []byte(`applications:
- name: fn
  command: exec sleep 300
  instances: 0
  memory: 64M
  metadata:
    labels: {hottopic.io/mapped: "true"}
    annotations: {hottopic.io/topics: "words", hottopic.io/output-topic: "counts"}
- name: plain
  command: echo "greeting $GREETING from $NAME"; exec sleep 300
  env: {GREETING: manifest, NAME: plain}
`), 0o644)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "local.env"), []byte("# local values\nGREETING=env-file\n"), 0o644)).To(Succeed())
		opts = Options{
			Manifest: filepath.Join(dir, "manifest.yml"),
			DataDir:  filepath.Join(dir, "data"),
			NATSPort: proctest.FreePort(t),
			EnvFile:  filepath.Join(dir, "local.env"),
			Out:      out,
			// No instance of the mapped app starts (instances: 0, nothing published).
			Executable: "/nonexistent/hottopic",
		}
	})

	it("runs the apps on an embedded server, provisions mappings, records itself and stops cleanly", func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- Run(ctx, opts, nil) }()
		Eventually(out, 15*time.Second).Should(gbytes.Say(`\[HOTTOPIC/DEV\] ready: fn ← words \(0–10 instances\), plain \(1 instances\)`))
		Eventually(out).Should(gbytes.Say(`plain \[APP/PROC/WEB/0\] OUT greeting env-file from plain`))
		Expect(string(out.Contents())).To(ContainSubstring("ignoring manifest fields that only matter on Cloud Foundry: memory (fn)"))
		Expect(string(out.Contents())).To(ContainSubstring("app fn: running hottopic-sidecar beside each instance"))

		st, err := state.Read(opts.DataDir)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.PID).To(Equal(os.Getpid()))
		Expect(st.ScalerURL).To(HavePrefix("http://127.0.0.1:"))
		// The person at the keyboard owns the local scaler: no token, every app.
		get := func(path string) string {
			resp, err := http.Get(st.ScalerURL + path)
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			Expect(resp.StatusCode).To(Equal(http.StatusOK), path)
			return string(body)
		}
		Eventually(func() string { return get(api.Path) }, 10*time.Second).Should(ContainSubstring(`"app_name": "fn"`))
		Expect(get("/v1/dashboard")).To(ContainSubstring(`"app_name": "fn"`))
		Expect(get("/metrics")).To(ContainSubstring("hottopic_scaler_leader"))

		Expect(st.Buses).To(HaveLen(1), "one implicit bus: no app lists services")
		Expect(st.Buses[0].Service).To(Equal(ImplicitService))
		Expect(st.Buses[0].Apps).To(Equal([]string{"fn", "plain"}))
		Expect(st.Buses[0].Topics).To(Equal([]string{"counts", "words"}))
		// Through the broker, the bus is an account: reached with its credentials.
		_, err = nats.Connect(st.NATSURL)
		Expect(err).To(MatchError(ContainSubstring("Authorization Violation")))
		cfg, err := st.OpsNATS("fn")
		Expect(err).NotTo(HaveOccurred())
		nc, err := cfenv.Connect(ctx, cfg, "dev-test")
		Expect(err).NotTo(HaveOccurred())
		defer nc.Close()
		js, err := jetstream.New(nc)
		Expect(err).NotTo(HaveOccurred())
		_, err = js.Consumer(ctx, topic.StreamName("words"), AppGUID("fn"))
		Expect(err).NotTo(HaveOccurred(), "the mapped app's consumer exists before ready")
		_, err = js.Stream(ctx, topic.StreamName("counts"))
		Expect(err).NotTo(HaveOccurred(), "the output topic's stream exists")

		dl := nats.NewMsg(topic.DLQSubject("words"))
		dl.Data = []byte("bad event")
		dl.Header.Set("Hottopic-App", AppGUID("fn"))
		dl.Header.Set("Hottopic-Reason", "HTTP 400 Bad Request")
		dl.Header.Set("Hottopic-Deliveries", "1")
		_, err = js.PublishMsg(ctx, dl)
		Expect(err).NotTo(HaveOccurred())
		Eventually(out).Should(gbytes.Say(`\[HOTTOPIC/DLQ\] dead letter on words for app fn after 1 deliveries: HTTP 400 Bad Request \(9 bytes: "bad event"\)`))

		second := opts
		second.NATSPort = proctest.FreePort(t)
		Expect(Run(ctx, second, nil)).To(MatchError(ContainSubstring("hottopic dev is already running from " + opts.DataDir)))

		cancel()
		Eventually(done, 20*time.Second).Should(Receive(BeNil()))
		Expect(string(out.Contents())).To(ContainSubstring("plain [CELL/0] Stopped instance 0"))
		Expect(string(out.Contents())).To(ContainSubstring("[HOTTOPIC/DEV] NATS server stopped"))
		_, err = state.Read(opts.DataDir)
		Expect(err).To(MatchError(state.ErrNotRunning))
	})

	it("keeps its buses across restarts, follows the manifest's topics and moves an app's binding with its services", func() {
		run := func(await ...string) *state.State {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, opts, nil) }()
			Eventually(out, 15*time.Second).Should(gbytes.Say(`\[HOTTOPIC/DEV\] ready: `))
			for _, line := range await {
				Eventually(out, 15*time.Second).Should(gbytes.Say(line))
			}
			st, err := state.Read(opts.DataDir)
			Expect(err).NotTo(HaveOccurred())
			cancel()
			Eventually(done, 20*time.Second).Should(Receive(BeNil()))
			return &st
		}
		// What an earlier hottopic dev (one bus, the global account) left.
		Expect(os.MkdirAll(filepath.Join(opts.DataDir, "jetstream", "$G", "streams"), 0o755)).To(Succeed())
		first := run()
		Expect(first.Buses).To(HaveLen(1))
		Expect(string(out.Contents())).To(ContainSubstring("jetstream/$G holds the streams of an earlier hottopic dev without event buses"))

		// fn moves to a bus of its own, with another output topic.
		Expect(os.WriteFile(opts.Manifest, []byte(`applications:
- name: fn
  command: exec sleep 300
  instances: 0
  services: [fn-bus]
  metadata:
    labels: {hottopic.io/mapped: "true"}
    annotations: {hottopic.io/topics: "words", hottopic.io/output-topic: "totals"}
- name: plain
  command: echo "$VCAP_SERVICES" > vcap_services.json; echo written; exec sleep 300
`), 0o644)).To(Succeed())
		second := run(`plain \[APP/PROC/WEB/0\] OUT written`)
		Expect(second.Buses).To(HaveLen(2))
		Expect(string(out.Contents())).To(ContainSubstring("event buses, each a NATS account made by the broker: fn-bus ← fn; hottopic-dev ← plain"))
		fnBus, _ := second.Bus("fn-bus")
		Expect(fnBus.Topics).To(Equal([]string{"totals", "words"}))
		implicit, _ := second.Bus("")
		Expect(implicit.Topics).To(BeEmpty(), "updated: no app of the implicit bus is mapped any more")

		// plain's binding, in VCAP_SERVICES as Cloud Foundry shapes it.
		var vcap map[string][]map[string]any
		raw, err := os.ReadFile(filepath.Join(dir, "vcap_services.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(raw, &vcap)).To(Succeed())
		Expect(vcap).To(HaveKey("hottopic"))
		Expect(vcap["hottopic"]).To(HaveLen(1))
		b := vcap["hottopic"][0]
		Expect(b).To(HaveKeyWithValue("label", "hottopic"))
		Expect(b).To(HaveKeyWithValue("plan", "standard"))
		Expect(b).To(HaveKeyWithValue("name", ImplicitService))
		Expect(b).To(HaveKeyWithValue("instance_name", ImplicitService))
		Expect(b).To(HaveKeyWithValue("instance_guid", busID(ImplicitService)))
		Expect(b).To(HaveKeyWithValue("binding_guid", bindingID(ImplicitService, "plain")))
		Expect(b["tags"]).To(ConsistOf("hottopic", "nats", "events"))
		Expect(b["credentials"]).To(HaveKeyWithValue("uri", fmt.Sprintf("nats://127.0.0.1:%d", opts.NATSPort)))
		Expect(b["credentials"]).To(HaveKeyWithValue("inbox_prefix", "_INBOX_"+bindingID(ImplicitService, "plain")))
		Expect(b["credentials"]).To(HaveKeyWithValue("creds", ContainSubstring("BEGIN NATS USER JWT")))

		// A restart with the same manifest keeps plain's binding: the same
		// credentials, kept beside the broker's keys, readable by the owner only.
		run(`plain \[APP/PROC/WEB/0\] OUT written`)
		raw, err = os.ReadFile(filepath.Join(dir, "vcap_services.json"))
		Expect(err).NotTo(HaveOccurred())
		var again map[string][]map[string]any
		Expect(json.Unmarshal(raw, &again)).To(Succeed())
		Expect(again["hottopic"][0]["credentials"]).To(Equal(b["credentials"]))
		fi, err := os.Stat(keptFile(opts.DataDir))
		Expect(err).NotTo(HaveOccurred())
		Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)))

		// The broker's state: each app bound once, to its own bus.
		setup, err := broker.EnsureInit(brokerSetupDir(opts.DataDir), broker.InitOptions{})
		Expect(err).NotTo(HaveOccurred())
		srv, err := startNATSConf(opts.DataDir, opts.NATSPort, setup.ServerConf, console.New(io.Discard))
		Expect(err).NotTo(HaveOccurred())
		defer srv.Shutdown()
		cfg, access, err := setup.Scaler(srv.ClientURL())
		Expect(err).NotTo(HaveOccurred())
		ctx := context.Background()
		nc, err := cfenv.Connect(ctx, cfg, "dev-test")
		Expect(err).NotTo(HaveOccurred())
		defer nc.Close()
		js, _ := jetstream.New(nc)
		st, err := buses.OpenState(ctx, js, access.StateKey)
		Expect(err).NotTo(HaveOccurred())
		bindings, err := st.Bindings(ctx)
		Expect(err).NotTo(HaveOccurred())
		byApp := map[string][]string{}
		for _, b := range bindings {
			if b.AppGUID != "" {
				byApp[b.AppGUID] = append(byApp[b.AppGUID], b.BusID)
			}
		}
		Expect(byApp).To(Equal(map[string][]string{
			AppGUID("fn"):    {busID("fn-bus")},
			AppGUID("plain"): {busID(ImplicitService)},
		}))
	})

	it("says plainly when the NATS port is taken", func() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer l.Close()
		opts.NATSPort = l.Addr().(*net.TCPAddr).Port
		err = Run(context.Background(), opts, nil)
		Expect(err).To(MatchError(ContainSubstring("is in use")))
		Expect(err).To(MatchError(ContainSubstring("--nats-port")))
	})

	it("refuses a bad env file with its line", func() {
		Expect(os.WriteFile(opts.EnvFile, []byte("A=1\nnot a pair\n"), 0o644)).To(Succeed())
		Expect(Run(context.Background(), opts, nil)).To(MatchError("env file " + opts.EnvFile + ": line 2: missing ="))
		opts.EnvFile = filepath.Join(dir, "nope.env")
		Expect(Run(context.Background(), opts, nil)).To(MatchError("env file " + opts.EnvFile + " not found"))
	})
}
