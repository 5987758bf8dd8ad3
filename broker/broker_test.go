package broker_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and the broker as processes")
	}
	spec.Run(t, "hottopic-broker", testBroker, spec.Report(report.Terminal{}))
}

const orders = "orders.created"

func testBroker(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		s          *system
		ctx        context.Context
	)

	it.Before(func() {
		s = startSystem(t)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
	})

	when("the OSB API is called", func() {
		it("serves the catalog behind basic auth", func() {
			code, body := s.osb("GET", "/v2/catalog", nil)
			Expect(code).To(Equal(http.StatusOK))
			svc := body["services"].([]any)[0].(map[string]any)
			Expect(svc["name"]).To(Equal("hottopic"))
			Expect(svc["tags"]).To(ConsistOf("hottopic", "nats", "events"))
			Expect(svc["bindable"]).To(BeTrue())
			plan := svc["plans"].([]any)[0].(map[string]any)
			Expect(plan["name"]).To(Equal("standard"))

			code, _ = s.osbAs("", "", "GET", "/v2/catalog", nil)
			Expect(code).To(Equal(http.StatusUnauthorized))
			code, _ = s.osbAs(s.env[broker.EnvUsername], "wrong-password-wrong", "GET", "/v2/catalog", nil)
			Expect(code).To(Equal(http.StatusUnauthorized))
			code, _ = s.osbAs("", "", "PUT", "/v2/service_instances/x", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID})
			Expect(code).To(Equal(http.StatusUnauthorized))
		})

		it("provisions, binds, makes a service key, unbinds and deprovisions", func() {
			code, body := s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": "no-such-plan"})
			Expect(code).To(Equal(http.StatusBadRequest), "%v", body)
			code, body = s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "parameters": map[string]any{"topics": []string{"$JS.API.>"}}})
			Expect(code).To(Equal(http.StatusBadRequest))
			Expect(body["description"]).To(ContainSubstring(`parameter topics: invalid topic pattern "$JS.API.>"`))
			code, body = s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "parameters": map[string]any{"topics": []string{"*.x"}}})
			Expect(code).To(Equal(http.StatusBadRequest))
			Expect(body["description"]).To(ContainSubstring("the first token must be literal"))
			code, body = s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "parameters": map[string]any{"queues": 1}})
			Expect(code).To(Equal(http.StatusBadRequest))
			Expect(body["description"]).To(ContainSubstring(`unknown field "queues"`))

			// Unknown instance.
			code, _ = s.osb("PUT", "/v2/service_instances/nope/service_bindings/b", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "bind_resource": map[string]any{"app_guid": "a"}})
			Expect(code).To(Equal(http.StatusNotFound))
			Expect(s.unbind("nope", "b")).To(Equal(http.StatusGone))
			code, _ = s.osb("DELETE", "/v2/service_instances/nope"+query, nil)
			Expect(code).To(Equal(http.StatusGone))

			s.provision("bus-1", orders)
			code, _ = s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "organization_guid": "org", "space_guid": "space", "parameters": map[string]any{"topics": []string{orders}}})
			Expect(code).To(Equal(http.StatusOK), "the same request again")
			code, _ = s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "organization_guid": "org", "space_guid": "other"})
			Expect(code).To(Equal(http.StatusConflict))

			creds := s.bind("bus-1", "bind-app", "app-1")
			Expect(creds["uri"]).To(Equal(s.natsURL))
			Expect(creds["urls"]).To(Equal(s.natsURL))
			Expect(creds["inbox_prefix"]).To(Equal("_INBOX_bind-app"))
			Expect(creds["creds"]).To(ContainSubstring("BEGIN NATS USER JWT"))
			code, _ = s.osb("PUT", "/v2/service_instances/bus-1/service_bindings/bind-app", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "bind_resource": map[string]any{"app_guid": "app-1"}})
			Expect(code).To(Equal(http.StatusConflict))
			key := s.bind("bus-1", "key-1", "")
			Expect(key["inbox_prefix"]).To(Equal("_INBOX_key-1"))

			code, body = s.osb("DELETE", "/v2/service_instances/bus-1"+query, nil)
			Expect(code).To(Equal(http.StatusUnprocessableEntity))
			Expect(body["description"]).To(Equal("bus bus-1 still has 2 binding(s) or service key(s): unbind them first"))

			// The bus's streams, seen deleted by the scaler's connection.
			nc, js := s.admin("bus-1")
			_, err := provision.EnsureTopicStream(ctx, js, orders, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureConsumer(ctx, js, "app-1", "enrich", orders, mapping.Defaults())
			Expect(err).NotTo(HaveOccurred())
			kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mapping.Bucket})
			Expect(err).NotTo(HaveOccurred())
			_, err = kv.Put(ctx, "app-1", []byte("{}"))
			Expect(err).NotTo(HaveOccurred())
			// Heard by a user of its own: deprovisioning revokes the scaler's
			// user before it deletes the streams (so a scaler still serving
			// the bus cannot make them again), and every user right after;
			// kept in a channel for that.
			w := s.watcher("bus-1")
			deleted := make(chan *nats.Msg, 10)
			_, err = w.ChanSubscribe("$JS.EVENT.ADVISORY.STREAM.DELETED.>", deleted)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.Flush()).To(Succeed())

			Expect(s.unbind("bus-1", "bind-app")).To(Equal(http.StatusOK))
			Expect(s.unbind("bus-1", "bind-app")).To(Equal(http.StatusGone))
			Expect(s.unbind("bus-1", "key-1")).To(Equal(http.StatusOK))
			code, body = s.osb("DELETE", "/v2/service_instances/bus-1"+query, nil)
			Expect(code).To(Equal(http.StatusOK), "%v", body)
			NewWithT(t).Eventually(nc.IsClosed, 10*time.Second).Should(BeTrue(), "the scaler's connection is closed (revoked)")

			var gone []string
			for len(gone) < 3 {
				select {
				case m := <-deleted:
					gone = append(gone, m.Subject)
				case <-time.After(30 * time.Second):
					t.Fatalf("stream deleted advisories: got only %v", gone)
				}
			}
			Expect(gone).To(ConsistOf(
				"$JS.EVENT.ADVISORY.STREAM.DELETED."+topic.StreamName(orders),
				"$JS.EVENT.ADVISORY.STREAM.DELETED."+provision.ArchiveStreamName(orders),
				"$JS.EVENT.ADVISORY.STREAM.DELETED.KV_"+mapping.Bucket))
			_, err = s.dial(key)
			Expect(err).To(HaveOccurred(), "the account's users are revoked")
			code, _ = s.osb("DELETE", "/v2/service_instances/bus-1"+query, nil)
			Expect(code).To(Equal(http.StatusGone))

			// The ID is free again, for a new account.
			s.provision("bus-1", orders)
		})
	})

	when("two brokers run", func() {
		it("shares buses and bindings through the KV state", func() {
			s.provision("bus-1", orders)
			first := s.brokerURL
			s.brokerURL = s.startBroker()
			code, _ := s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "organization_guid": "org", "space_guid": "space", "parameters": map[string]any{"topics": []string{orders}}})
			Expect(code).To(Equal(http.StatusOK), "the second broker knows the bus")
			creds := s.bind("bus-1", "bind-1", "app-1")
			app := s.mustDial(creds)

			s.brokerURL = first
			code, _ = s.osb("PUT", "/v2/service_instances/bus-1/service_bindings/bind-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "bind_resource": map[string]any{"app_guid": "app-1"}})
			Expect(code).To(Equal(http.StatusConflict), "the first broker knows the binding")
			bindings, err := s.state().Bindings(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(bindings).To(HaveLen(1))
			Expect(*bindings[0]).To(MatchFields(IgnoreExtras, Fields{"ID": Equal("bind-1"), "BusID": Equal("bus-1"), "AppGUID": Equal("app-1"), "InboxPrefix": Equal("_INBOX_bind-1")}))
			Expect(s.unbind("bus-1", "bind-1")).To(Equal(http.StatusOK))
			select {
			case <-app.closed:
			case <-time.After(time.Minute):
				t.Fatal("the binding made by the other broker was not revoked")
			}
		})
	})

	when("the server refuses the bus's account", func() {
		it("answers with the reason and leaves nothing behind", func() {
			stranger, err := nkeys.CreateOperator()
			Expect(err).NotTo(HaveOccurred())
			seed, _ := stranger.Seed()
			good := s.brokerURL
			s.brokerURL = s.startBroker(broker.EnvOperatorSigningKey + "=" + string(seed))
			code, body := s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "organization_guid": "org", "space_guid": "space"})
			Expect(code).To(Equal(http.StatusInternalServerError))
			Expect(body["description"]).To(Equal("the NATS servers do not accept the account of bus bus-1 (is HOTTOPIC_OPERATOR_SIGNING_KEY a signing key of their operator?): nats: Authorization Violation"))

			s.brokerURL = good
			code, _ = s.osb("PUT", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "organization_guid": "org", "space_guid": "space"})
			Expect(code).To(Equal(http.StatusCreated), "no record of the failed bus is left")
		})
	})

	when("an app is bound", func() {
		var (
			app, other *client
			appCreds   map[string]any
			js         jetstream.JetStream
		)
		it.Before(func() {
			s.provision("bus-1", orders, "audit.>")
			var err error
			_, js = s.admin("bus-1")
			_, err = provision.EnsureTopicStream(ctx, js, orders, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureDLQStream(ctx, js, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			for _, g := range []string{"app-1", "app-2"} {
				_, err = provision.EnsureConsumer(ctx, js, g, g, orders, mapping.Defaults())
				Expect(err).NotTo(HaveOccurred())
			}
			kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mapping.Bucket})
			Expect(err).NotTo(HaveOccurred())
			_, err = kv.Put(ctx, "app-1", []byte(`{"mine":1}`))
			Expect(err).NotTo(HaveOccurred())
			_, err = kv.Put(ctx, "app-2", []byte(`{"theirs":2}`))
			Expect(err).NotTo(HaveOccurred())
			for i := 0; i < 2; i++ {
				_, err = js.Publish(ctx, orders, []byte("event"))
				Expect(err).NotTo(HaveOccurred())
			}
			appCreds = s.bind("bus-1", "bind-1", "app-1")
			app = s.mustDial(appCreds)
			other = s.mustDial(s.bind("bus-1", "bind-2", "app-2"))
		})

		it("lets it do what a sidecar does", func() {
			// Publish to a declared topic, a topic of a declared pattern, dead letters.
			_, err := app.js.Publish(ctx, orders, []byte("from app"))
			Expect(err).NotTo(HaveOccurred())
			_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"audit.>"}})
			Expect(err).NotTo(HaveOccurred())
			_, err = app.js.Publish(ctx, "audit.orders", []byte("x"))
			Expect(err).NotTo(HaveOccurred())
			_, err = app.js.Publish(ctx, topic.DLQSubject(orders), []byte("dead"))
			Expect(err).NotTo(HaveOccurred())

			// Its consumer: info, pull, ack.
			c, err := app.js.Consumer(ctx, topic.StreamName(orders), "app-1")
			Expect(err).NotTo(HaveOccurred())
			batch, err := c.Fetch(1)
			Expect(err).NotTo(HaveOccurred())
			var got []jetstream.Msg
			for m := range batch.Messages() {
				got = append(got, m)
			}
			Expect(batch.Error()).NotTo(HaveOccurred())
			Expect(got).To(HaveLen(1))
			Expect(got[0].InProgress()).To(Succeed())
			Expect(got[0].DoubleAck(ctx)).To(Succeed())
			info, err := c.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.AckFloor.Stream).To(Equal(uint64(1)))

			// Its mapping key: get and watch.
			kv, err := app.js.KeyValue(ctx, mapping.Bucket)
			Expect(err).NotTo(HaveOccurred())
			e, err := kv.Get(ctx, "app-1")
			Expect(err).NotTo(HaveOccurred())
			Expect(string(e.Value())).To(Equal(`{"mine":1}`))
			w, err := kv.Watch(ctx, "app-1")
			Expect(err).NotTo(HaveOccurred())
			defer w.Stop()
			first := <-w.Updates()
			Expect(first).NotTo(BeNil())
			Expect(string(first.Value())).To(Equal(`{"mine":1}`))

			Expect(app.nc.LastError()).NotTo(HaveOccurred())
		})

		it("refuses everything else, as NATS enforces it", func() {
			stream := topic.StreamName(orders)
			// Topics not declared, reserved subjects, $SYS.
			app.deniedPub(t, "payments.created")
			app.deniedPub(t, "hottopic.internal")
			app.deniedPub(t, "$SYS.REQ.SERVER.PING")
			app.deniedPub(t, "$SYS.REQ.ACCOUNT.PING.CONNZ")
			// Stream and consumer management.
			app.deniedPub(t, "$JS.API.STREAM.CREATE.X")
			app.deniedPub(t, "$JS.API.STREAM.DELETE."+stream)
			app.deniedPub(t, "$JS.API.STREAM.PURGE."+stream)
			app.deniedPub(t, "$JS.API.STREAM.MSG.GET."+stream)
			app.deniedPub(t, "$JS.API.STREAM.INFO."+stream)
			app.deniedPub(t, "$JS.API.CONSUMER.CREATE."+stream+".app-1")
			app.deniedPub(t, "$JS.API.CONSUMER.DURABLE.CREATE."+stream+".app-1")
			app.deniedPub(t, "$JS.API.CONSUMER.CREATE."+stream)
			app.deniedPub(t, "$JS.API.CONSUMER.DELETE."+stream+".app-1")
			app.deniedPub(t, "$JS.API.CONSUMER.LIST."+stream)
			app.deniedPub(t, "$JS.API.CONSUMER.CREATE.KV_hottopic_mappings.w.$KV.hottopic_mappings.app-2")
			app.deniedPub(t, "$JS.API.CONSUMER.CREATE.KV_hottopic_mappings.w.$KV.hottopic_mappings.>")
			// Another app's consumer: pull, ack, info.
			app.deniedPub(t, "$JS.API.CONSUMER.MSG.NEXT."+stream+".app-2")
			app.deniedPub(t, "$JS.API.CONSUMER.INFO."+stream+".app-2")
			c2, err := other.js.Consumer(ctx, stream, "app-2")
			Expect(err).NotTo(HaveOccurred())
			batch, err := c2.Fetch(1)
			Expect(err).NotTo(HaveOccurred())
			var theirs jetstream.Msg
			for m := range batch.Messages() {
				theirs = m
			}
			Expect(theirs).NotTo(BeNil())
			app.deniedPub(t, theirs.Reply())
			// Another app's mapping key, writing its own, the whole bucket.
			app.deniedPub(t, "$JS.API.DIRECT.GET.KV_hottopic_mappings.$KV.hottopic_mappings.app-2")
			app.deniedPub(t, "$JS.API.DIRECT.GET.KV_hottopic_mappings")
			app.deniedPub(t, "$KV.hottopic_mappings.app-1")
			app.deniedPub(t, "$KV.hottopic_mappings.app-2")
			// Receiving: topics, others' inboxes, plain _INBOX, $SYS.
			app.deniedSub(t, orders)
			app.deniedSub(t, ">")
			app.deniedSub(t, "_INBOX.>")
			app.deniedSub(t, "_INBOX_bind-2.>")
			app.deniedSub(t, "$SYS.>")
			app.deniedSub(t, "$JS.EVENT.>")

			// The other app's event is untouched by the forged ack.
			info, err := c2.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.NumAckPending).To(Equal(1))
		})

		it("lets a service key publish to the topics and nothing else", func() {
			key := s.mustDial(s.bind("bus-1", "key-1", ""))
			_, err := key.js.Publish(ctx, orders, []byte("from outside"))
			Expect(err).NotTo(HaveOccurred())
			key.deniedPub(t, topic.DLQSubject(orders))
			key.deniedPub(t, "payments.created")
			key.deniedPub(t, "$JS.API.CONSUMER.MSG.NEXT."+topic.StreamName(orders)+".app-1")
			key.deniedPub(t, "$JS.API.CONSUMER.INFO."+topic.StreamName(orders)+".app-1")
			key.deniedPub(t, "$JS.API.DIRECT.GET.KV_hottopic_mappings.$KV.hottopic_mappings.app-1")
			key.deniedPub(t, "$JS.API.STREAM.INFO.KV_hottopic_mappings")
			key.deniedSub(t, orders)
			key.deniedSub(t, "_INBOX_bind-1.>")
		})

		it("updates a bus's topics for the bindings made after, not for those made before", func() {
			old := s.mustDial(s.bind("bus-1", "key-old", ""))
			const payments = "payments.created"
			code, body := s.osb("PATCH", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "parameters": map[string]any{"topics": []string{"$SYS.>"}}})
			Expect(code).To(Equal(http.StatusBadRequest))
			Expect(body["description"]).To(ContainSubstring(`invalid topic pattern "$SYS.>"`))
			code, _ = s.osb("PATCH", "/v2/service_instances/nope", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "parameters": map[string]any{"topics": []string{payments}}})
			Expect(code).To(Equal(http.StatusNotFound))
			code, body = s.osb("PATCH", "/v2/service_instances/bus-1", map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID, "parameters": map[string]any{"topics": []string{orders, payments}}})
			Expect(code).To(Equal(http.StatusOK), "%v", body)
			bus, ok, err := s.state().Bus(ctx, "bus-1")
			Expect(ok, err).To(BeTrue())
			Expect(bus.Topics).To(Equal([]string{orders, payments}))

			_, err = provision.EnsureTopicStream(ctx, js, payments, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			key := s.mustDial(s.bind("bus-1", "key-new", ""))
			_, err = key.js.Publish(ctx, payments, []byte("new topic"))
			Expect(err).NotTo(HaveOccurred())
			old.deniedPub(t, payments)
		})

		it("revokes at unbind: a new connection is refused, an open one closed", func() {
			Expect(s.unbind("bus-1", "bind-1")).To(Equal(http.StatusOK))
			select {
			case <-app.closed:
			case <-time.After(time.Minute):
				t.Fatal("the revoked connection was not closed")
			}
			Expect(app.nc.IsClosed()).To(BeTrue())
			_, err := s.dial(appCreds)
			Expect(err).To(MatchError(ContainSubstring("Authorization Violation")))
			// The other binding is untouched.
			Expect(other.nc.Status()).To(Equal(nats.CONNECTED))
			_, err = other.js.Publish(ctx, orders, []byte("still here"))
			Expect(err).NotTo(HaveOccurred())
		})
	})

	when("the real sidecar runs with an app binding", func() {
		it("pulls, delivers, acks and publishes the app's response, with no permission refused", func() {
			s.provision("bus-1", orders, "enriched")
			_, js := s.admin("bus-1")
			for _, tp := range []string{orders, "enriched"} {
				_, err := provision.EnsureTopicStream(ctx, js, tp, provision.StreamOptions{})
				Expect(err).NotTo(HaveOccurred())
			}
			_, err := provision.EnsureDLQStream(ctx, js, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			settings := mapping.Defaults()
			settings.OutputTopic = "enriched"
			_, err = provision.EnsureConsumer(ctx, js, "app-1", "enrich", orders, settings)
			Expect(err).NotTo(HaveOccurred())
			// Interest retention: the output topic keeps the response only for a consumer.
			downstream, err := provision.EnsureConsumer(ctx, js, "app-2", "audit", "enriched", mapping.Defaults())
			Expect(err).NotTo(HaveOccurred())
			kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mapping.Bucket})
			Expect(err).NotTo(HaveOccurred())
			m, err := mapping.Mapping{AppGUID: "app-1", AppName: "enrich", Topics: []string{orders}, Settings: settings}.Encode()
			Expect(err).NotTo(HaveOccurred())
			_, err = kv.Put(ctx, "app-1", m)
			Expect(err).NotTo(HaveOccurred())

			received := make(chan string, 10)
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				received <- string(body)
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write([]byte("enriched " + string(body)))
			}))
			t.Cleanup(app.Close)
			sidecar := s.startSidecar(s.bind("bus-1", "bind-1", "app-1"), "app-1", app.Listener.Addr().(*net.TCPAddr).Port)

			key := s.mustDial(s.bind("bus-1", "key-1", ""))
			_, err = key.js.Publish(ctx, orders, []byte("order 1"))
			Expect(err).NotTo(HaveOccurred())
			select {
			case b := <-received:
				Expect(b).To(Equal("order 1"))
			case <-time.After(time.Minute):
				t.Fatalf("the app got no event; sidecar:\n%s", sidecar.Output())
			}
			msg, err := downstream.Next(jetstream.FetchMaxWait(time.Minute))
			Expect(err).NotTo(HaveOccurred(), "the response in the output topic")
			Expect(string(msg.Data())).To(Equal("enriched order 1"))
			c, err := js.Consumer(ctx, topic.StreamName(orders), "app-1")
			Expect(err).NotTo(HaveOccurred())
			NewWithT(t).Eventually(func() uint64 {
				info, err := c.Info(ctx)
				if err != nil {
					return 0
				}
				return info.AckFloor.Stream
			}, time.Minute).Should(Equal(uint64(1)), "the event is acked")
			Expect(sidecar.Output()).NotTo(ContainSubstring("ermission"))
		})
	})

	when("a bound app's dead letters are redriven and its topic replayed", func() {
		it("delivers them to that app's sidecar alone; another binding can neither pull nor inspect them", func() {
			s.provision("bus-1", orders)
			_, js := s.admin("bus-1")
			_, err := provision.EnsureTopicStream(ctx, js, orders, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureDLQStream(ctx, js, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			settledNotes, err := provision.EnsureSettledConsumer(ctx, js, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mapping.Bucket})
			Expect(err).NotTo(HaveOccurred())
			settings := mapping.Defaults()
			var m mapping.Mapping
			for _, g := range []string{"app-1", "app-2"} {
				_, err = provision.EnsureConsumer(ctx, js, g, g, orders, settings)
				Expect(err).NotTo(HaveOccurred())
				m = mapping.Mapping{AppGUID: g, AppName: g, Topics: []string{orders}, Settings: settings}
				enc, err := m.Encode()
				Expect(err).NotTo(HaveOccurred())
				_, err = kv.Put(ctx, g, enc)
				Expect(err).NotTo(HaveOccurred())
			}
			m.AppGUID, m.AppName = "app-1", "app-1"

			var fixed atomic.Bool
			received := make(chan string, 10)
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if !fixed.Load() {
					w.WriteHeader(http.StatusUnprocessableEntity)
					_, _ = w.Write([]byte("cannot parse " + string(body)))
					return
				}
				received <- string(body)
			}))
			t.Cleanup(app.Close)
			sidecar := s.startSidecar(s.bind("bus-1", "bind-1", "app-1"), "app-1", app.Listener.Addr().(*net.TCPAddr).Port)
			other := s.mustDial(s.bind("bus-1", "bind-2", "app-2"))
			key := s.mustDial(s.bind("bus-1", "key-1", ""))
			since := time.Now()
			for _, e := range []string{"e1", "e2"} {
				_, err = key.js.Publish(ctx, orders, []byte(e))
				Expect(err).NotTo(HaveOccurred())
			}
			var letters []ops.Letter
			NewWithT(t).Eventually(func() []ops.Letter {
				letters, err = ops.List(ctx, js, ops.Filter{App: "app-1"})
				Expect(err).NotTo(HaveOccurred())
				return letters
			}, time.Minute).Should(HaveLen(2), "the sidecar dead-lettered both; sidecar:\n%s", sidecar.Output())
			Expect(letters[0].Reason).To(HavePrefix("HTTP 422 Unprocessable Entity: cannot parse e"))

			fixed.Store(true)
			out, err := ops.Redrive(ctx, js, m, letters, provision.StreamOptions{}, time.Minute)
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(MatchFields(IgnoreExtras, Fields{"Redriven": Equal(2), "Failed": BeZero(), "Pending": BeZero()}), "sidecar:\n%s", sidecar.Output())
			got := []string{<-received, <-received}
			Expect(got).To(ConsistOf("e1", "e2"))
			info, err := settledNotes.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.NumPending).To(Equal(uint64(2)), "the settlements wait for the scaler, which deletes the letters")

			r, err := ops.Replay(ctx, js, m, orders, since, time.Time{}, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			Expect(r.Events).To(Equal(2))
			got = []string{<-received, <-received}
			Expect(got).To(ConsistOf("e1", "e2"))
			Expect(sidecar.Output()).NotTo(ContainSubstring("ermission"))

			// The other app's binding: not app-1's per-app consumer, nor its settlements.
			other.deniedPub(t, "$JS.API.CONSUMER.MSG.NEXT."+topic.RedriveStream+".app-1")
			other.deniedPub(t, "$JS.API.CONSUMER.INFO."+topic.RedriveStream+".app-1")
			other.deniedPub(t, "$JS.API.CONSUMER.DELETE."+topic.RedriveStream+".app-1")
			other.deniedPub(t, "$JS.API.STREAM.MSG.GET."+topic.RedriveStream)
			other.deniedPub(t, "$JS.API.STREAM.MSG.GET."+topic.DLQStream)
			other.deniedPub(t, topic.SettledSubject("app-1"))
			other.deniedPub(t, topic.RedriveSubject("app-1", orders))
			other.deniedSub(t, topic.RedriveReadySubject("app-1"))
		})
	})

	when("the operator limits each bus", func() {
		it("refuses what is over a bus's limits, and only in that bus", func() {
			s.brokerURL = s.startBroker(broker.EnvBusConnections+"=3", broker.EnvBusSubscriptions+"=4",
				broker.EnvBusStreams+"=2", broker.EnvBusConsumers+"=2")
			_, catalog := s.osb("GET", "/v2/catalog", nil)
			Expect(catalog["services"]).To(ContainElement(HaveKeyWithValue("plans", ContainElement(HaveKeyWithValue("description", ContainSubstring("at most 10 GiB of disk, 256 MiB of memory, 3 connections, 4 subscriptions, 2 streams, 2 consumers"))))))
			s.provision("bus-a", orders)
			s.provision("bus-b", orders)

			// Streams and consumers: a topic is two streams (its own and its
			// archive) and one consumer (the archive's), so one app's
			// consumer fits and a second topic or a second app does not.
			_, js := s.admin("bus-a")
			_, err := provision.EnsureTopicStream(ctx, js, orders, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureTopicStream(ctx, js, "orders.paid", provision.StreamOptions{})
			Expect(err).To(MatchError(ContainSubstring("maximum number of streams reached")))
			_, err = provision.EnsureConsumer(ctx, js, "app-1", "enrich", orders, mapping.Defaults())
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureConsumer(ctx, js, "app-2", "enrich", orders, mapping.Defaults())
			Expect(err).To(MatchError(jetstream.ErrMaximumConsumersLimit))

			// Connections: the scaler's and two apps'; a fourth is refused.
			creds := s.bind("bus-a", "bind-a", "app-1")
			var apps []*client
			for range 2 {
				var c *client
				Eventually(func() (err error) { c, err = s.dial(creds); return err }).Should(Succeed())
				apps = append(apps, c)
			}
			_, err = s.dial(creds)
			Expect(err).To(MatchError(nats.ErrMaxAccountConnectionsExceeded))

			// Subscriptions: five on one app's inbox are over the bus's four.
			inbox := creds["inbox_prefix"].(string)
			for i := range 5 {
				_, err := apps[0].nc.SubscribeSync(inbox + "." + strconv.Itoa(i))
				Expect(err).NotTo(HaveOccurred())
			}
			Eventually(apps[0].errs).Should(Receive(MatchError(nats.ErrMaxSubscriptionsExceeded)))

			// Another bus counts its own.
			_, jsB := s.admin("bus-b")
			_, err = provision.EnsureTopicStream(ctx, jsB, orders, provision.StreamOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = provision.EnsureConsumer(ctx, jsB, "app-1", "enrich", orders, mapping.Defaults())
			Expect(err).NotTo(HaveOccurred())
			credsB := s.bind("bus-b", "bind-b", "app-1")
			for range 2 {
				Eventually(func() error { _, err := s.dial(credsB); return err }).Should(Succeed())
			}
		})
	})

	when("two buses have the same topic", func() {
		it("keeps their events apart", func() {
			s.provision("bus-a", orders)
			s.provision("bus-b", orders)
			var consumers []jetstream.Consumer
			for _, bus := range []string{"bus-a", "bus-b"} {
				_, js := s.admin(bus)
				_, err := provision.EnsureTopicStream(ctx, js, orders, provision.StreamOptions{})
				Expect(err).NotTo(HaveOccurred())
				c, err := provision.EnsureConsumer(ctx, js, "app-1", "enrich", orders, mapping.Defaults())
				Expect(err).NotTo(HaveOccurred())
				consumers = append(consumers, c)
			}
			keyA := s.mustDial(s.bind("bus-a", "key-a", ""))
			appB := s.mustDial(s.bind("bus-b", "app-b", "app-1"))

			_, err := keyA.js.Publish(ctx, orders, []byte("for a"))
			Expect(err).NotTo(HaveOccurred())
			_, err = appB.js.Publish(ctx, orders, []byte("for b"))
			Expect(err).NotTo(HaveOccurred())
			_, err = appB.js.Publish(ctx, orders, []byte("for b again"))
			Expect(err).NotTo(HaveOccurred())

			// A consumer counts a stored event once the stream has signalled
			// it, just after the publish was acknowledged.
			for i, want := range []uint64{1, 2} {
				Eventually(func() (uint64, error) {
					info, err := consumers[i].Info(ctx)
					if err != nil {
						return 0, err
					}
					return info.NumPending, nil
				}).Should(Equal(want), "bus %d", i)
			}
			// B's app pulls B's events only: the same names in A are not B's.
			c, err := appB.js.Consumer(ctx, topic.StreamName(orders), "app-1")
			Expect(err).NotTo(HaveOccurred())
			batch, err := c.FetchNoWait(10)
			Expect(err).NotTo(HaveOccurred())
			var bodies []string
			for m := range batch.Messages() {
				bodies = append(bodies, string(m.Data()))
			}
			Expect(bodies).To(Equal([]string{"for b", "for b again"}))
		})
	})
}
