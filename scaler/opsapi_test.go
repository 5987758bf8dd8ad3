package scaler_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

// The operations on an app's events through the API, with cf tokens of the
// CC double: the app's Space Developer may do all, a read-only role may read
// only, another space's user learns nothing, no token gets nothing.
func TestOperationsAPI(t *testing.T) {
	g := NewWithT(t)
	Expect, Eventually := g.Expect, g.Eventually
	ctx := context.Background()
	ns := natstest.Run(t)
	js, err := jetstream.New(ns.Connect())
	Expect(err).NotTo(HaveOccurred())
	cc := ccdouble.New(t)
	org := cc.AddOrg("acme")
	dev, other := cc.AddSpace(org, "dev"), cc.AddSpace(org, "other")
	cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(dev), ccdouble.SpaceDeveloper(other))
	mapped := map[string]string{mapping.LabelMapped: "true"}
	orders := cc.AddApp(dev, "orders", mapped, map[string]string{mapping.AnnTopics: "orders.created"})
	billing := cc.AddApp(other, "billing", mapped, map[string]string{mapping.AnnTopics: "orders.created"})
	cc.AddUser("alice", "pw", ccdouble.SpaceDeveloper(dev))
	cc.AddUser("carol", "pw", ccdouble.SpaceAuditor(dev))
	cc.AddUser("bob", "pw", ccdouble.SpaceDeveloper(other))
	alice, carol, bob := cc.IssueToken("alice", time.Hour), cc.IssueToken("carol", time.Hour), cc.IssueToken("bob", time.Hour)

	p, err := cfplatform.New(cfplatform.Config{API: cc.URL(), ClientID: "hottopic-scaler", ClientSecret: "s3cret"})
	Expect(err).NotTo(HaveOccurred())
	s := scaler.New(js, p, scaler.WithPollInterval(50*time.Millisecond), scaler.WithDiscoveryInterval(100*time.Millisecond),
		scaler.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(sctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(scaler.Access{Tokens: cfplatform.NewTokens(cfplatform.Config{API: cc.URL()})}.Protect(s.Handler()))
	t.Cleanup(srv.Close)
	for _, app := range []string{orders, billing} {
		Eventually(func() error { _, err := ops.AppMapping(ctx, js, app); return err }, 10*time.Second).Should(Succeed())
	}

	letter := func(app string, seq uint64, data string) uint64 {
		ack, err := provision.PublishDeadLetter(ctx, js, provision.DeadLetter{
			App: app, Topic: "orders.created", Reason: "HTTP 422 Unprocessable Entity", Deliveries: 1, StreamSequence: seq, Data: []byte(data),
		}, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		return ack.Sequence
	}
	o1, b1, o2 := letter(orders, 1, "one"), letter(billing, 2, "two"), letter(orders, 3, "three")

	// call sends one request; it returns the status and the decoded body.
	call := func(tok, method, path, body string) (int, map[string]any) {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, srv.URL+path, rd)
		Expect(err).NotTo(HaveOccurred())
		if tok != "" {
			req.Header.Set("Authorization", tok)
		}
		if method != "GET" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusUnauthorized { // 401: the access layer's
			Expect(strings.TrimSpace(string(raw))).NotTo(ContainSubstring("\n"), "errors are one line")
		}
		var v map[string]any
		Expect(json.Unmarshal(raw, &v)).To(Succeed(), string(raw))
		return resp.StatusCode, v
	}
	ids := func(v map[string]any) []float64 {
		var out []float64
		for _, l := range v["dead_letters"].([]any) {
			out = append(out, l.(map[string]any)["id"].(float64))
		}
		return out
	}
	app := func(guid string) string { return "/v1/apps/" + guid }
	redrive := `{"topic":"orders.created","wait":"100ms"}`
	replay := `{"topic":"orders.created","since":"` + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + `"}`

	// No token: nothing.
	for _, r := range [][2]string{{"GET", "/dead-letters"}, {"GET", "/dead-letters/1"}, {"POST", "/redrive"}, {"POST", "/replay"}, {"DELETE", "/dead-letters"}} {
		code, v := call("", r[0], app(orders)+r[1], "")
		Expect(code).To(Equal(http.StatusUnauthorized), r[1])
		Expect(v["error"]).To(ContainSubstring("no token"))
	}

	// Reading: the app's space, any role; another space's token sees no such app.
	for _, tok := range []string{alice, carol} {
		code, v := call(tok, "GET", app(orders)+"/dead-letters", "")
		Expect(code).To(Equal(http.StatusOK), "%v", v)
		Expect(ids(v)).To(Equal([]float64{float64(o2), float64(o1)}), "newest first, only the app's")
		Expect(v["dead_letters"].([]any)[0].(map[string]any)["app"]).To(Equal("orders"))
	}
	code, v := call(alice, "GET", app(orders)+"/dead-letters/"+itoa(o2), "")
	Expect(code).To(Equal(http.StatusOK), "%v", v)
	Expect(v["data"]).To(Equal("dGhyZWU="), "the payload, base64")
	Expect(v["reason"]).To(Equal("HTTP 422 Unprocessable Entity"))
	code, v = call(alice, "GET", app(orders)+"/dead-letters/"+itoa(b1), "")
	Expect(code).To(Equal(http.StatusNotFound))
	Expect(v["error"]).To(Equal("app 'orders' has no dead letter " + itoa(b1)))
	code, v = call(alice, "GET", app(orders)+"/dead-letters?topic=orders.*", "")
	Expect(code).To(Equal(http.StatusBadRequest))
	Expect(v["error"]).To(HavePrefix("topic: "))
	for _, r := range [][3]string{{"GET", "/dead-letters", ""}, {"GET", "/dead-letters/" + itoa(o1), ""}, {"POST", "/redrive", redrive}, {"POST", "/replay", replay}, {"DELETE", "/dead-letters", ""}} {
		code, v := call(bob, r[0], app(orders)+r[1], r[2])
		Expect(code).To(Equal(http.StatusNotFound), r[1])
		Expect(v["error"]).To(Equal("app " + orders + " is not a mapped app your token may see"))
	}

	// Writes take JSON only: a web page cannot post them cross-site.
	req, err := http.NewRequest("POST", srv.URL+app(orders)+"/redrive", strings.NewReader(redrive))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", alice)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	Expect(resp.StatusCode).To(Equal(http.StatusUnsupportedMediaType))

	// Writing: a read-only role is refused, and nothing changes.
	for _, r := range [][3]string{{"POST", "/redrive", redrive}, {"POST", "/replay", replay}, {"DELETE", "/dead-letters", ""}} {
		code, v := call(carol, r[0], app(orders)+r[1], r[2])
		Expect(code).To(Equal(http.StatusForbidden), r[1])
		Expect(v["error"]).To(ContainSubstring("not authorized"))
	}
	_, v = call(alice, "GET", app(orders)+"/dead-letters", "")
	Expect(ids(v)).To(HaveLen(2))

	// Bad bodies name the field.
	for body, want := range map[string]string{
		`{"limit":"x"}`:                         "limit: want int",
		`{"wait":"soon"}`:                       `wait "soon": want a positive duration`,
		`{"ids":[0]}`:                           "ids: dead letter IDs start at 1",
		`{"topic":"a b"}`:                       "topic: ",
		`{"tpoic":"orders.created"}`:            `body: json: unknown field "tpoic"`,
		`{"topic":"orders.created","ids":[99]}`: "",
	} {
		code, v := call(alice, "POST", app(orders)+"/redrive", body)
		if want == "" {
			Expect(code).To(Equal(http.StatusNotFound), body)
			Expect(v["error"]).To(Equal("app 'orders' has no dead letter 99 on topic orders.created: nothing redriven"))
			continue
		}
		Expect(code).To(Equal(http.StatusBadRequest), body)
		Expect(v["error"]).To(HavePrefix(want), body)
	}
	code, v = call(alice, "POST", app(orders)+"/replay", `{"topic":"orders.created","since":"yesterday"}`)
	Expect(code).To(Equal(http.StatusBadRequest))
	Expect(v["error"]).To(ContainSubstring("want RFC 3339"))
	code, v = call(alice, "POST", app(orders)+"/replay", `{"since":"2026-12-01T09:00:00Z"}`)
	Expect(code).To(Equal(http.StatusBadRequest))
	Expect(v["error"]).To(HavePrefix("topic is required"))
	code, v = call(alice, "DELETE", app(orders)+"/dead-letters", `{"older_than":"-1h"}`)
	Expect(code).To(Equal(http.StatusBadRequest))
	Expect(v["error"]).To(HavePrefix(`older_than "-1h"`))

	// The Space Developer redrives: to orders alone (no sidecar runs, so
	// they stay queued for it); billing's path gets nothing.
	code, v = call(alice, "POST", app(orders)+"/redrive", redrive)
	Expect(code).To(Equal(http.StatusOK), "%v", v)
	Expect(v).To(HaveKeyWithValue("selected", 2.0))
	Expect(v).To(HaveKeyWithValue("pending", 2.0))
	queued := func(guid string) uint64 {
		n, err := ops.Queued(ctx, js, guid, "orders.created")
		Expect(err).NotTo(HaveOccurred())
		return n
	}
	Expect(queued(orders)).To(Equal(uint64(2)))
	Expect(queued(billing)).To(BeZero())

	// Replay: the topic's window, to orders alone.
	_, err = js.Publish(ctx, "orders.created", []byte("e1"))
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() uint64 {
		s, err := js.Stream(ctx, provision.ArchiveStreamName("orders.created"))
		if err != nil {
			return 0
		}
		return s.CachedInfo().State.Msgs
	}, 10*time.Second).Should(Equal(uint64(1)))
	code, v = call(alice, "POST", app(orders)+"/replay", replay)
	Expect(code).To(Equal(http.StatusOK), "%v", v)
	Expect(v).To(HaveKeyWithValue("events", 1.0))
	Expect(queued(orders)).To(Equal(uint64(3)))
	Expect(queued(billing)).To(BeZero())
	code, v = call(alice, "POST", app(orders)+"/replay", `{"topic":"invoices","since":"2026-12-01T09:00:00Z"}`)
	Expect(code).To(Equal(http.StatusUnprocessableEntity))
	Expect(v["error"]).To(Equal("replay to app 'orders': the app is not mapped to topic invoices"))

	// Purge: only the app's letters.
	code, v = call(alice, "DELETE", app(orders)+"/dead-letters", `{"topic":"orders.created"}`)
	Expect(code).To(Equal(http.StatusOK), "%v", v)
	Expect(v).To(HaveKeyWithValue("deleted", 2.0))
	left, err := ops.List(ctx, js, ops.Filter{})
	Expect(err).NotTo(HaveOccurred())
	Expect(left).To(HaveLen(1))
	Expect(left[0].ID).To(Equal(b1), "billing's letter stays")
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
