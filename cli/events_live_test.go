package cli_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/cli"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

func TestEventsLive(t *testing.T) {
	spec.Run(t, "events with a scaler", testEventsLive, spec.Report(report.Terminal{}))
}

// testEventsLive runs a real scaler (embedded JetStream, the CC double as
// its platform) and reads its /v1/mappings through `events`.
func testEventsLive(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect       = NewWithT(t).Expect
		Eventually   = NewWithT(t).Eventually
		w            *cfWorld
		orders       string
		scalerURL    string
		devScalerURL string
		js           jetstream.JetStream
	)

	it.Before(func() {
		w = newCFWorld(t)
		orders = w.cc.AddApp(w.spaceGUID, "orders", nil, nil)
		w.cc.BindService(orders, w.bus)
		billing := w.cc.AddApp(w.spaceGUID, "billing", nil, nil)
		w.cc.BindService(billing, w.bus)
		w.cc.AddClient("scaler", "scaler-secret", ccdouble.SpaceDeveloper(w.spaceGUID))

		ns := natstest.Run(t)
		nc, err := nats.Connect(ns.URL())
		Expect(err).NotTo(HaveOccurred())
		t.Cleanup(nc.Close)
		js, err = jetstream.New(nc)
		Expect(err).NotTo(HaveOccurred())
		s := runScaler(t, js, w.cc.URL(), "scaler", "scaler-secret")
		// As on Cloud Foundry: the API takes the caller's cf token.
		srv := httptest.NewServer(scaler.Access{Tokens: cfplatform.NewTokens(cfplatform.Config{API: w.cc.URL()})}.Protect(s.Handler()))
		t.Cleanup(srv.Close)
		scalerURL = srv.URL
		// As under `hottopic dev`: the same scaler, no token.
		devSrv := httptest.NewServer(scaler.OwnerAccess().Protect(s.Handler()))
		t.Cleanup(devSrv.Close)
		devScalerURL = devSrv.URL

		Expect(run("map-event", "orders", "orders.created", "--max", "5", "--lag-per-instance", "2").code).To(Equal(0))
		Expect(run("map-event", "billing", "invoices.due").code).To(Equal(0))
		// The consumer exists once the scaler reconciled; events published
		// from then on are the app's lag.
		// billing's too, or a test may ask for it before the scaler found it.
		for app, tp := range map[string]string{orders: "orders.created", billing: "invoices.due"} {
			Eventually(func() error {
				_, err := js.Consumer(context.Background(), topic.StreamName(tp), topic.ConsumerName(app))
				return err
			}, 10*time.Second, 20*time.Millisecond).Should(Succeed())
		}
		for range 6 {
			_, err := js.Publish(context.Background(), "orders.created", []byte("{}"))
			Expect(err).NotTo(HaveOccurred())
		}
	})

	it("adds live lag and current/desired instances to the CF table", func() {
		Eventually(func() string {
			return run("events", "--scaler", scalerURL).stdout
		}, 10*time.Second, 50*time.Millisecond).Should(MatchRegexp(
			`(?m)^orders\s+orders.created\s+HT_orders_created\s+6\s+3/3\s+0/5\s+2\s+ok$`))
		r := run("events", "--scaler", scalerURL)
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^name\s+topics\s+streams\s+lag\s+instances\s+min/max\s+lag-per-instance\s+status$`))
		Expect(r.stdout).To(MatchRegexp(`(?m)^billing\s+invoices.due\s+HT_invoices_due\s+0\s+\d+/\d+\s+0/10\s+10\s+ok$`))
		Expect(w.cc.Instances(orders, "web")).To(Equal(3), "the scaler scaled the app it reports")

		t.Setenv(cli.EnvScalerURL, scalerURL)
		r = run("events", "orders", "--json")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring(`"live": true`))
		Expect(r.stdout).To(ContainSubstring(`"lag": 6`))
		Expect(r.stdout).To(ContainSubstring(`"desired_instances": 3`))
	})

	it("shows a running `hottopic dev` runtime instead of CF, unless --cf", func() {
		Eventually(func() string { return run("events", "--cf", "--scaler", scalerURL).stdout },
			10*time.Second, 50*time.Millisecond).Should(MatchRegexp(`(?m)^orders\s+\S+\s+\S+\s+6\s+3/3`))
		failsWith(t, run("events", "--dev"), "--dev: no running `hottopic dev` found in .hottopic")
		failsWith(t, run("events", "--data-dir", "elsewhere"), "--data-dir: no running `hottopic dev` found in elsewhere")

		// A runtime started with another --data-dir is found through the same flag.
		Expect(os.MkdirAll("elsewhere", 0o755)).To(Succeed())
		Expect(state.Write("elsewhere", state.State{PID: os.Getpid(), NATSURL: "nats://127.0.0.1:1", ScalerURL: devScalerURL})).To(Succeed())
		r := run("events", "orders", "--data-dir", "elsewhere")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Getting event mappings of the `hottopic dev` runtime"))
		Expect(r.stdout).To(MatchRegexp(`(?m)^orders\s+orders.created\s+HT_orders_created\s+6\s+3/3`))
		Expect(os.RemoveAll("elsewhere")).To(Succeed())

		Expect(os.MkdirAll(state.DefaultDir, 0o755)).To(Succeed())
		Expect(state.Write(state.DefaultDir, state.State{PID: os.Getpid(), NATSURL: "nats://127.0.0.1:1", ScalerURL: devScalerURL})).To(Succeed())
		w.cc.ResetCalls()
		r = run("events")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Getting event mappings of the `hottopic dev` runtime (scaler " + devScalerURL + ")..."))
		Expect(r.stdout).To(MatchRegexp(`(?m)^orders\s+orders.created\s+HT_orders_created\s+6\s+3/3\s+0/5\s+2\s+ok$`))
		Expect(w.cc.CallsTo("", "/v3")).To(BeEmpty(), "the dev runtime needs no Cloud Foundry")

		r = run("events", "billing", "--dev")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("billing"))
		Expect(r.stdout).NotTo(ContainSubstring("orders.created"))

		r = run("events", "--cf")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("in org acme / space dev"))
		Expect(w.cc.CallsTo(http.MethodGet, "/v3/apps")).NotTo(BeEmpty())
	})
}
