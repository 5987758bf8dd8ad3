package cli_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/cli"
	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

func TestDeadLettersThroughScaler(t *testing.T) {
	spec.Run(t, "dead letters through the scaler", testDeadLettersThroughScaler, spec.Report(report.Terminal{}))
}

// testDeadLettersThroughScaler runs the operations commands on Cloud Foundry
// with no NATS credentials at all: a real scaler (embedded JetStream, the CC
// double as its platform and token checker) does the work with the cf token.
func testDeadLettersThroughScaler(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect, Eventually = NewWithT(t).Expect, NewWithT(t).Eventually
		w                  *cfWorld
		orders, billing    string
		scalerURL          string
		srv                *natstest.Server
		js                 jetstream.JetStream
		ctx                = context.Background()
		o1, o2, b1         uint64
	)
	letter := func(app string, seq uint64, data string) uint64 {
		ack, err := provision.PublishDeadLetter(ctx, js, provision.DeadLetter{
			App: app, Topic: "orders.created", Reason: "HTTP 422 Unprocessable Entity", Deliveries: 1, StreamSequence: seq, Data: []byte(data),
		}, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		return ack.Sequence
	}
	queued := func(guid string) uint64 {
		n, err := ops.Queued(ctx, js, guid, "orders.created")
		Expect(err).NotTo(HaveOccurred())
		return n
	}

	it.Before(func() {
		RegisterTestingT(t) // startApp asserts with the global Gomega
		w = newCFWorld(t)
		orders = w.cc.AddApp(w.spaceGUID, "orders", nil, nil)
		billing = w.cc.AddApp(w.spaceGUID, "billing", nil, nil)
		w.cc.BindService(orders, w.bus)
		w.cc.BindService(billing, w.bus)
		prod := w.cc.AddSpace(w.orgGUID, "prod")
		stranger := w.cc.AddApp(prod, "stranger", map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "orders.created"})
		w.cc.AddClient("scaler", "scaler-secret", ccdouble.SpaceDeveloper(w.spaceGUID), ccdouble.SpaceDeveloper(prod))

		srv = natstest.Run(t)
		var err error
		js, err = jetstream.New(srv.Connect())
		Expect(err).NotTo(HaveOccurred())
		s := runScaler(t, js, w.cc.URL(), "scaler", "scaler-secret")
		api := httptest.NewServer(scaler.Access{Tokens: cfplatform.NewTokens(cfplatform.Config{API: w.cc.URL()})}.Protect(s.Handler()))
		t.Cleanup(api.Close)
		scalerURL = api.URL

		Expect(run("map-event", "orders", "orders.created").code).To(Equal(0))
		Expect(run("map-event", "billing", "orders.created").code).To(Equal(0))
		for _, app := range []string{orders, billing, stranger} {
			Eventually(func() error { _, err := ops.AppMapping(ctx, js, app); return err }, 10*time.Second, 20*time.Millisecond).Should(Succeed())
		}
		o1, b1 = letter(orders, 1, "one"), letter(billing, 2, "two")
		letter(stranger, 3, "secret")
		o2 = letter(orders, 4, "three")
		// No NATS credentials anywhere: only the cf login and the scaler.
		t.Setenv("HOTTOPIC_NATS_URL", "")
		t.Setenv("VCAP_SERVICES", "")
	})

	it("shows the same as NATS would, and only the space's apps", func() {
		for _, args := range [][]string{
			{"dead-letters"}, {"dead-letters", "orders", "--json"}, {"dead-letters", "--topic", "orders.created", "--json"},
			{"dead-letter", "orders", strconv.FormatUint(o2, 10)}, {"dead-letter", "billing", strconv.FormatUint(b1, 10), "--raw"},
		} {
			viaScaler := run(append(args, "--scaler", scalerURL)...)
			Expect(viaScaler.code).To(Equal(0), viaScaler.stderr)
			viaNATS := run(append(args, "--nats", srv.URL())...)
			Expect(viaNATS.code).To(Equal(0), viaNATS.stderr)
			Expect(viaScaler.stdout).To(Equal(viaNATS.stdout), "%v", args)
		}
		t.Setenv(cli.EnvScalerURL, scalerURL)
		r := run("dead-letters")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("billing: 1 dead letter\norders: 2 dead letters\n"))
		Expect(r.stdout).NotTo(ContainSubstring("stranger"))
		failsWith(t, run("dead-letter", "orders", strconv.FormatUint(b1, 10)), "app 'orders' has no dead letter "+strconv.FormatUint(b1, 10))
		failsWith(t, run("dead-letters", "stranger"), "App 'stranger' not found in org acme / space dev")
		w.cc.AddApp(w.spaceGUID, "plain", nil, nil) // not mapped: nothing the scaler serves
		r = run("dead-letters", "plain")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(HaveSuffix("No dead letters.\n"))
		failsWith(t, run("redrive", "plain"), "is not a mapped app your token may see")
	})

	it("redrives to that app alone, replays, purges; a read-only role changes nothing", func() {
		t.Setenv(cli.EnvScalerURL, scalerURL)
		w.cc.AddUser("auditor@example.com", "pw", ccdouble.SpaceAuditor(w.spaceGUID))
		w.login("auditor@example.com", "pw")
		Expect(run("dead-letters", "orders").code).To(Equal(0))
		failsWith(t, run("redrive", "orders"), "not authorized to redrive the dead letters of app 'orders'")
		failsWith(t, run("replay", "orders", "--topic", "orders.created", "--since", "1h"), "not authorized to replay events to app 'orders'")
		failsWith(t, run("purge-dead-letters", "orders", "-f"), "not authorized to purge the dead letters of app 'orders'")
		Expect(queued(orders)).To(BeZero())
		left, err := ops.List(ctx, js, ops.Filter{App: orders})
		Expect(err).NotTo(HaveOccurred())
		Expect(left).To(HaveLen(2), "nothing deleted")

		w.login(devUser, devPass)
		ordersGot, billingGot := make(chan string, 10), make(chan string, 10)
		startApp(t, orders, srv.URL(), ordersGot)
		startApp(t, billing, srv.URL(), billingGot)
		r := run("redrive", "orders", "--id", strconv.FormatUint(o1, 10), "--wait", "30s")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("Redriving 1 dead letter to app orders in org acme / space dev...\nredriven 1, failed 0\n"))
		Expect(<-ordersGot).To(Equal("one"))
		r = run("redrive", "orders", "--wait", "30s")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(HaveSuffix("redriven 1, failed 0\n"))
		Expect(<-ordersGot).To(Equal("three"))
		Expect(run("redrive", "orders").stdout).To(Equal("App 'orders' has no dead letters.\n"))
		Expect(queued(billing)).To(BeZero(), "nothing on billing's own path")
		Expect(billingGot).To(BeEmpty())

		_, err = js.Publish(ctx, "orders.created", []byte("e1"))
		Expect(err).NotTo(HaveOccurred())
		Expect(<-ordersGot).To(Equal("e1"))
		Expect(<-billingGot).To(Equal("e1"))
		Eventually(func() uint64 {
			s, err := js.Stream(ctx, provision.ArchiveStreamName("orders.created"))
			Expect(err).NotTo(HaveOccurred())
			return s.CachedInfo().State.Msgs
		}).Should(Equal(uint64(1)))
		r = run("replay", "orders", "--topic", "orders.created", "--since", "1h")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`^Replaying events of topic orders.created from .* to app orders in org acme / space dev...\nreplayed 1 event \(published .*\), queued for app orders alone\n$`))
		Expect(<-ordersGot).To(Equal("e1"))
		Expect(queued(billing)).To(BeZero())
		failsWith(t, run("replay", "orders", "--topic", "invoices", "--since", "1h"), "replay to app 'orders': the app is not mapped to topic invoices")

		r = run("purge-dead-letters", "billing", "-f")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("Deleted 1 dead letter.\n"))
		Expect(run("dead-letters").stdout).To(ContainSubstring("No dead letters."))
		Expect(billingGot).To(BeEmpty())
	})
}

// runScaler runs a scaler on Cloud Foundry (the CC double at api, as client
// id) until the test ends.
func runScaler(t *testing.T, js jetstream.JetStream, api, id, secret string) *scaler.Scaler {
	p, err := cfplatform.New(cfplatform.Config{API: api, ClientID: id, ClientSecret: secret})
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	s := scaler.New(js, p, scaler.WithPollInterval(50*time.Millisecond), scaler.WithDiscoveryInterval(100*time.Millisecond),
		scaler.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}
