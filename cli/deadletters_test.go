package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/cli"
	"github.com/hottopic-io/hottopic/dev"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/scaler/api"
	"github.com/hottopic-io/hottopic/sidecar"
)

func TestDeadLetters(t *testing.T) {
	spec.Run(t, "dead letters", testDeadLetters, spec.Report(report.Terminal{}))
}

func testDeadLetters(t *testing.T, when spec.G, it spec.S) {
	var (
		srv     *natstest.Server
		js      jetstream.JetStream
		dataDir string
		ctx     = context.Background()
		orders  = dev.AppGUID("orders")
		audit   = dev.AppGUID("audit")
	)

	run := func(stdin string, args ...string) result {
		root := cli.NewRoot()
		var out, errb bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetIn(strings.NewReader(stdin))
		root.SetArgs(append(args, "--data-dir", dataDir))
		r := result{}
		if err := root.Execute(); err != nil {
			errb.WriteString("Error: " + err.Error() + "\n")
			r.code = 1
		}
		r.stdout, r.stderr = out.String(), errb.String()
		return r
	}
	letter := func(app, tp string, seq uint64, data string) uint64 {
		h := nats.Header{}
		h.Set("Content-Type", "text/plain")
		ack, err := provision.PublishDeadLetter(ctx, js, provision.DeadLetter{
			App: app, Topic: tp, Reason: "HTTP 400 Bad Request", Deliveries: 1, StreamSequence: seq, Header: h, Data: []byte(data),
		}, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		return ack.Sequence
	}
	ids := func(args ...string) []uint64 {
		r := run("", append([]string{"dead-letters", "--json"}, args...)...)
		Expect(r.code).To(Equal(0), r.stderr)
		var v struct {
			DeadLetters []struct {
				ID uint64 `json:"id"`
			} `json:"dead_letters"`
		}
		Expect(json.Unmarshal([]byte(r.stdout), &v)).To(Succeed())
		out := []uint64{}
		for _, l := range v.DeadLetters {
			out = append(out, l.ID)
		}
		return out
	}

	it.Before(func() {
		RegisterTestingT(t)
		t.Setenv("HOTTOPIC_NATS_URL", "")
		t.Setenv("VCAP_SERVICES", "")
		srv = natstest.Run(t)
		var err error
		js, err = jetstream.New(srv.Connect())
		Expect(err).NotTo(HaveOccurred())
		// The dev runtime as the CLI finds it: its state and its scaler's API.
		scaler := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(api.Mappings{Mappings: []api.Mapping{
				{App: "orders", AppName: "orders", AppGUID: orders}, {App: "audit", AppName: "audit", AppGUID: audit},
			}})
		}))
		t.Cleanup(scaler.Close)
		dataDir = t.TempDir()
		Expect(state.Write(dataDir, state.State{PID: os.Getpid(), NATSURL: srv.URL(), ScalerURL: scaler.URL})).To(Succeed())
	})

	it("lists dead letters newest first with a count per app, shows one whole, and purges after asking", func() {
		a1 := letter(orders, "orders.created", 4, "first")
		b1 := letter(audit, "audit.log", 9, "\x00\x01binary")
		a2 := letter(orders, "orders.created", 5, `{"id":5}`)

		r := run("", "dead-letters")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Getting dead letters the `hottopic dev` runtime"))
		Expect(r.stdout).To(MatchRegexp(`(?s)id +app +topic +time +deliveries +reason +size\n` +
			fmt.Sprint(a2) + ` +orders +orders.created .* 1 +HTTP 400 Bad Request +8 B\n` +
			fmt.Sprint(b1) + ` +audit +audit.log .*\n` + fmt.Sprint(a1) + ` +orders .* 5 B\n`))
		Expect(r.stdout).To(ContainSubstring("audit: 1 dead letter\norders: 2 dead letters\n"))
		Expect(ids("orders")).To(Equal([]uint64{a2, a1}))
		Expect(ids("--topic", "audit.log")).To(Equal([]uint64{b1}))

		r = run("", "dead-letter", "orders", fmt.Sprint(a2))
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("topic:       orders.created (stream HT_orders_created, sequence 5)"))
		Expect(r.stdout).To(ContainSubstring("Hottopic-Reason: HTTP 400 Bad Request"))
		Expect(r.stdout).To(ContainSubstring("Content-Type: text/plain"))
		Expect(r.stdout).To(ContainSubstring("payload (8 B):\n{\"id\":5}\n"))
		r = run("", "dead-letter", "audit", fmt.Sprint(b1), "--raw")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("\x00\x01binary"))
		r = run("", "dead-letter", "orders", fmt.Sprint(b1))
		Expect(r.code).To(Equal(1))
		Expect(r.stderr).To(Equal(fmt.Sprintf("Error: app 'orders' has no dead letter %d\n", b1)))
		r = run("", "dead-letter", "orders", "x1")
		Expect(r.stderr).To(ContainSubstring(`dead letter ID "x1": want a whole number`))
		r = run("", "dead-letters", "nosuch")
		Expect(r.stderr).To(Equal("Error: app 'nosuch' not found in the `hottopic dev` runtime\n"))
		r = run("", "dead-letters", "--topic", "orders.*")
		Expect(r.stderr).To(ContainSubstring("--topic: invalid topic"))

		r = run("n\n", "purge-dead-letters", "orders")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Really delete 2 dead letters of app orders?> "))
		Expect(r.stdout).To(ContainSubstring("Purge cancelled; nothing deleted."))
		Expect(ids()).To(Equal([]uint64{a2, b1, a1}))
		r = run("", "purge-dead-letters", "orders", "--older-than", "1h", "-f")
		Expect(r.stdout).To(ContainSubstring("No dead letters of app orders older than 1h0m0s."))
		r = run("y\n", "purge-dead-letters", "orders", "--topic", "orders.created")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Deleted 2 dead letters."))
		Expect(ids()).To(Equal([]uint64{b1}))
	})

	it("redrives an app's dead letters to that app and reports what it took", func() {
		settings := mapping.Defaults()
		_, err := provision.EnsureTopicStream(ctx, js, "orders.created", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		a1 := letter(orders, "orders.created", 1, "one")
		letter(orders, "orders.created", 2, "two")
		b1 := letter(audit, "orders.created", 3, "three")

		r := run("", "redrive", "orders")
		Expect(r.code).To(Equal(1))
		Expect(r.stderr).To(Equal("Error: app 'orders' has no event mapping: map it again before redriving (its dead letters stay)\n"))

		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mapping.Bucket})
		Expect(err).NotTo(HaveOccurred())
		b, _ := mapping.Mapping{AppGUID: orders, Topics: []string{"orders.created"}, Settings: settings}.Encode()
		_, err = kv.Put(ctx, orders, b)
		Expect(err).NotTo(HaveOccurred())
		_, err = provision.EnsureConsumer(ctx, js, orders, "", "orders.created", settings)
		Expect(err).NotTo(HaveOccurred())

		r = run("", "redrive", "orders", "--id", fmt.Sprint(b1))
		Expect(r.code).To(Equal(1))
		Expect(r.stderr).To(Equal(fmt.Sprintf("Error: app 'orders' has no dead letter %d: nothing redriven\n", b1)))
		Expect(ids()).To(HaveLen(3))

		got := make(chan string, 10)
		startApp(t, orders, srv.URL(), got)

		r = run("", "redrive", "orders", "--id", fmt.Sprint(a1), "--wait", "30s")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("Redriving 1 dead letter to app orders the `hottopic dev` runtime...\nredriven 1, failed 0\n"))
		Expect(<-got).To(Equal("one"))
		r = run("", "redrive", "orders", "--wait", "30s")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("redriven 1, failed 0\n"))
		Expect(<-got).To(Equal("two"))
		Expect(ids()).To(Equal([]uint64{b1}), "audit's letter stays")
		Expect(got).To(BeEmpty())
		r = run("", "redrive", "orders")
		Expect(r.stdout).To(ContainSubstring("App 'orders' has no dead letters."))
		_ = time.Second
	})

	it("replays a window of a topic to one app, and refuses what is not kept until migrate-streams", func() {
		settings := mapping.Defaults()
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mapping.Bucket})
		Expect(err).NotTo(HaveOccurred())
		b, _ := mapping.Mapping{AppGUID: orders, Topics: []string{"orders.created", "legacy"}, Settings: settings}.Encode()
		_, err = kv.Put(ctx, orders, b)
		Expect(err).NotTo(HaveOccurred())
		_, err = provision.EnsureTopicStream(ctx, js, "legacy", provision.StreamOptions{ReplayWindow: -1})
		Expect(err).NotTo(HaveOccurred())
		_, err = provision.EnsureTopicStream(ctx, js, "orders.created", provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = provision.EnsureConsumer(ctx, js, orders, "", "orders.created", settings)
		Expect(err).NotTo(HaveOccurred())
		for _, d := range []string{"a", "b"} {
			_, err := js.Publish(ctx, "orders.created", []byte(d))
			Expect(err).NotTo(HaveOccurred())
		}

		r := run("", "replay", "orders", "--since", "1h")
		Expect(r.stderr).To(Equal("Error: --topic is required: the topic whose events to replay\n"))
		r = run("", "replay", "orders", "--topic", "legacy", "--since", "yesterday")
		Expect(r.stderr).To(ContainSubstring(`--since "yesterday": want a time`))
		r = run("", "replay", "orders", "--topic", "legacy", "--since", "1h")
		Expect(r.code).To(Equal(1))
		Expect(r.stderr).To(ContainSubstring("topic legacy keeps no replay window"))
		Expect(r.stderr).To(ContainSubstring("`hottopic migrate-streams` adds one"))

		r = run("", "migrate-streams", "--dry-run")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("legacy: would get archive HTA_legacy\n2 topic streams: 0 archives created, 1 already had one\ndry run: nothing changed\n"))
		r = run("", "migrate-streams")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("legacy: archive HTA_legacy created (replay window 24h0m0s)\n"))
		r = run("", "replay", "orders", "--topic", "legacy", "--since", "1h")
		Expect(r.code).To(Equal(1))
		Expect(r.stderr).To(ContainSubstring("is older than what is kept: topic legacy keeps 24h0m0s of events, complete from"))

		Eventually(func() uint64 { // the archive copies events asynchronously
			s, err := js.Stream(ctx, "HTA_orders_created")
			Expect(err).NotTo(HaveOccurred())
			return s.CachedInfo().State.Msgs
		}).Should(Equal(uint64(2)))
		got := make(chan string, 10)
		startApp(t, orders, srv.URL(), got)
		r = run("", "replay", "orders", "--topic", "orders.created", "--since", "1h")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring("replayed 2 events"))
		// Twice each: the topic consumer's delivery and the replay, in any order.
		seen := map[string]int{}
		for range 4 {
			seen[<-got]++
		}
		Expect(seen).To(Equal(map[string]int{"a": 2, "b": 2}))
	})
}

// startApp runs a function app that reports every body on got, with its
// sidecar in this process, until the test ends.
func startApp(t *testing.T, guid, natsURL string, got chan<- string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(r.Body)
		got <- buf.String()
	})}
	go func() { _ = app.Serve(l) }()
	t.Cleanup(func() { _ = app.Close() })
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan int)
	env := map[string]string{
		"PORT":              strconv.Itoa(l.Addr().(*net.TCPAddr).Port),
		"VCAP_APPLICATION":  fmt.Sprintf(`{"application_id":%q,"application_name":"app","instance_index":0}`, guid),
		"HOTTOPIC_NATS_URL": natsURL,
		"HOTTOPIC_LISTEN":   "127.0.0.1:0",
	}
	go func() { done <- sidecar.Main(sctx, func(k string) string { return env[k] }, &bytes.Buffer{}) }()
	t.Cleanup(func() { stop(); <-done })
}
