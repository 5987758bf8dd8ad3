package cli_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestDeadLettersCF(t *testing.T) {
	spec.Run(t, "dead letters on cf", testDeadLettersCF, spec.Report(report.Terminal{}))
}

func testDeadLettersCF(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect        = NewWithT(t).Expect
		w             *cfWorld
		orders, other string
		js            jetstream.JetStream
		srv           *natstest.Server
		ctx           = context.Background()
	)

	it.Before(func() {
		w = newCFWorld(t)
		mapped := map[string]string{"hottopic.io/mapped": "true"}
		orders = w.cc.AddApp(w.spaceGUID, "orders", mapped, map[string]string{"hottopic.io/topics": "orders.created"})
		otherSpace := w.cc.AddSpace(w.orgGUID, "prod")
		other = w.cc.AddApp(otherSpace, "billing", mapped, map[string]string{"hottopic.io/topics": "orders.created"})
		srv = natstest.Run(t)
		var err error
		js, err = jetstream.New(srv.Connect())
		Expect(err).NotTo(HaveOccurred())
		t.Setenv("HOTTOPIC_NATS_URL", srv.URL())
		t.Setenv("VCAP_SERVICES", "")
		for i, app := range []string{orders, other} {
			_, err := provision.PublishDeadLetter(ctx, js, provision.DeadLetter{
				App: app, Topic: "orders.created", Reason: "HTTP 422 Unprocessable Entity", Deliveries: 1, StreamSequence: uint64(i + 1), Data: []byte("x"),
			}, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
		}
	})

	it("lists only the targeted space's dead letters, by app name", func() {
		r := run("dead-letters")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Getting dead letters in org acme / space dev..."))
		Expect(r.stdout).To(MatchRegexp(`\n1 +orders +orders.created .* HTTP 422 Unprocessable Entity +1 B\n`))
		Expect(r.stdout).To(ContainSubstring("orders: 1 dead letter\n"))
		Expect(r.stdout).NotTo(ContainSubstring("billing"))
		Expect(r.stdout).NotTo(ContainSubstring(other))

		failsWith(t, run("dead-letters", "billing"), "App 'billing' not found in org acme / space dev")
		failsWith(t, run("dead-letter", "orders", "2"), "app 'orders' has no dead letter 2")
	})

	it("needs NATS, and the Space Developer role to change anything", func() {
		t.Setenv("HOTTOPIC_NATS_URL", "")
		failsWith(t, run("dead-letters"), "dead letters and replay on Cloud Foundry go through the scaler (give --scaler URL or set HOTTOPIC_SCALER_URL) or NATS (give --nats URL or set HOTTOPIC_NATS_URL")
		r := run("dead-letters", "--nats", srv.URL())
		Expect(r.code).To(Equal(0), r.stderr)

		t.Setenv("HOTTOPIC_NATS_URL", srv.URL())
		w.cc.AddUser("auditor@example.com", "pw", ccdouble.SpaceAuditor(w.spaceGUID))
		w.login("auditor@example.com", "pw")
		r = run("dead-letters", "orders")
		Expect(r.code).To(Equal(0), r.stderr)
		failsWith(t, run("purge-dead-letters", "orders", "-f"), "not authorized to purge the dead letters of app 'orders'")
		failsWith(t, run("redrive", "orders"), "not authorized to redrive the dead letters of app 'orders'")
		left, err := js.Stream(ctx, "HOTTOPIC_DLQ")
		Expect(err).NotTo(HaveOccurred())
		info, err := left.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.State.Msgs).To(Equal(uint64(2)), "nothing deleted")

		w.login(devUser, devPass)
		r = run("purge-dead-letters", "orders", "-f")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Deleted 1 dead letter."))
	})
}
