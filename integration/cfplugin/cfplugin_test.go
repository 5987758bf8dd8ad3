// Package cfplugin_test runs the real cf CLI (v8.18.0, from
// scripts/tools.sh) against the Cloud Controller double, installs the built
// hottopic binary as its plugin and drives cf map-event / unmap-event /
// event-mappings through it.
package cfplugin_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

func TestCFPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the cf CLI and the hottopic binary")
	}
	spec.Run(t, "cf plugin", testCFPlugin, spec.Report(report.Terminal{}))
}

const (
	clientID     = "hottopic-ci"
	clientSecret = "ci-secret"
)

func testCFPlugin(t *testing.T, when spec.G, it spec.S) {
	Expect, Eventually := NewWithT(t).Expect, NewWithT(t).Eventually

	var (
		cc         *ccdouble.CC
		cfBin, bin string
		env        []string
		spaceGUID  string
		orders     string
		web        string
	)

	// cf runs the cf CLI with the isolated CF_HOME and returns its output.
	cf := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(cfBin, args...)
		cmd.Env = env
		return proctest.Run(t, cmd, 2*time.Minute)
	}
	mustCF := func(args ...string) string {
		t.Helper()
		out, code := cf(args...)
		Expect(code).To(Equal(0), "cf %s:\n%s", strings.Join(args, " "), out)
		return out
	}
	// hottopic runs the binary standalone on cf's own login (same CF_HOME).
	hottopic := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Dir = env, t.TempDir()
		return proctest.Run(t, cmd, 2*time.Minute)
	}
	patches := func() []string {
		var out []string
		for _, c := range cc.CallsTo(http.MethodPatch, "/v3/apps/"+orders) {
			out = append(out, string(c.Body))
		}
		return out
	}

	it.Before(func() {
		root := repoRoot(t)
		cfBin = tool(t, root, "cf")
		tmp := t.TempDir()
		bin = proctest.Build(t, "./cmd/hottopic")

		cc = ccdouble.New(t, ccdouble.WithTLS())
		org := cc.AddOrg("acme")
		spaceGUID = cc.AddSpace(org, "dev")
		cc.AddClient(clientID, clientSecret, ccdouble.SpaceDeveloper(spaceGUID))
		orders = cc.AddApp(spaceGUID, "orders", nil, nil)
		web = cc.AddApp(spaceGUID, "web", nil, nil)
		// The one-bus setup without a broker: a user-provided NATS service.
		cc.BindService(orders, cc.AddUserProvidedService(spaceGUID, "hottopic-nats", "hottopic"))

		home := filepath.Join(tmp, "home")
		Expect(os.MkdirAll(home, 0o700)).To(Succeed())
		env = []string{"HOME=" + home, "CF_HOME=" + home, "CF_COLOR=false", "CF_DIAL_TIMEOUT=5",
			"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp}

		mustCF("api", cc.URL(), "--skip-ssl-validation")
		mustCF("auth", clientID, clientSecret, "--client-credentials")
		mustCF("target", "-o", "acme", "-s", "dev")
		out2 := mustCF("install-plugin", "-f", bin)
		Expect(out2).To(ContainSubstring("successfully installed"))
		cc.ResetCalls()
	})

	it("maps, lists and unmaps events through cf, on the v3 API only", func() {
		out := mustCF("plugins")
		Expect(out).To(MatchRegexp(`hottopic\s+\S+\s+map-event`))
		Expect(out).To(MatchRegexp(`hottopic\s+\S+\s+event-mappings`))

		out = mustCF("map-event", "orders", "orders.created", "--max", "5")
		Expect(out).To(ContainSubstring("Mapping topic orders.created to app orders in org acme / space dev as " + clientID + "..."))
		Expect(out).To(ContainSubstring("OK"))
		lookups := cc.CallsTo(http.MethodGet, "/v3/apps")
		Expect(lookups).NotTo(BeEmpty())
		Expect(lookups[0].Query().Get("names")).To(Equal("orders"))
		Expect(lookups[0].Query().Get("space_guids")).To(Equal(spaceGUID))
		Expect(patches()).To(HaveLen(1))
		Expect(cc.CallsTo(http.MethodPatch, "/v3/apps")[0].Subject).To(Equal(clientID), "the plugin uses cf's token")
		Expect(patches()[0]).To(MatchJSON(`{"metadata":{
			"labels":{"hottopic.io/mapped":"true"},
			"annotations":{"hottopic.io/topics":"orders.created","hottopic.io/max-instances":"5"}}}`))

		mustCF("map-event", "orders", "orders.updated")
		Expect(patches()[1]).To(MatchJSON(`{"metadata":{"annotations":{"hottopic.io/topics":"orders.created,orders.updated"}}}`))

		out = mustCF("map-event", "orders", "orders.updated")
		Expect(out).To(ContainSubstring("Topic orders.updated is already mapped to app orders."))
		Expect(patches()).To(HaveLen(2))

		cc.ResetCalls()
		out = mustCF("event-mappings")
		Expect(out).To(ContainSubstring("Getting event mappings in org acme / space dev as " + clientID + "..."))
		Expect(out).To(MatchRegexp(`(?m)^orders\s+orders.created,orders.updated\s+HT_orders_created,HT_orders_updated\s+0/5\s+10\s+ok$`))
		Expect(out).NotTo(ContainSubstring("web"))
		lists := cc.CallsTo(http.MethodGet, "/v3/apps")
		Expect(lists).To(HaveLen(1))
		Expect(lists[0].Query().Get("label_selector")).To(Equal(mapping.LabelMapped + "=true"))
		Expect(lists[0].Query().Get("space_guids")).To(Equal(spaceGUID))

		cc.ResetCalls()
		mustCF("unmap-event", "orders", "orders.created")
		Expect(patches()).To(Equal([]string{`{"metadata":{"annotations":{"hottopic.io/topics":"orders.updated"}}}`}))
		mustCF("unmap-event", "orders", "orders.updated")
		Expect(patches()).To(HaveLen(2))
		Expect(patches()[1]).To(MatchJSON(`{"metadata":{
			"labels":{"hottopic.io/mapped":null},
			"annotations":{"hottopic.io/topics":null,"hottopic.io/min-instances":null,"hottopic.io/max-instances":null,
				"hottopic.io/lag-per-instance":null,"hottopic.io/idle-seconds":null,"hottopic.io/concurrency":null,
				"hottopic.io/path":null,"hottopic.io/timeout-seconds":null,"hottopic.io/max-deliver":null,
				"hottopic.io/output-topic":null,"hottopic.io/batch-size":null,"hottopic.io/batch-wait-ms":null}}}`))
		Expect(cc.App(orders).Labels).To(BeEmpty())
		Expect(cc.App(orders).Annotations).To(BeEmpty())

		for _, c := range cc.Calls() {
			Expect(c.Path).NotTo(HavePrefix("/v2"), "the plugin must not go through the legacy v2 API")
		}

		// standalone, on the config.json cf wrote (TLS skipped as cf was told)
		out, code := hottopic("map-event", "orders", "orders.created")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("in org acme / space dev as " + clientID))
		out, code = hottopic("events")
		Expect(code).To(Equal(0), out)
		Expect(out).To(MatchRegexp(`(?m)^orders\s+orders.created\s+HT_orders_created\s+0/10\s+10\s+ok$`))
	})

	it("fails in one line with exit code 1 and changes nothing", func() {
		out, code := cf("map-event", "nope", "orders.created")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: App 'nope' not found in org acme / space dev"))

		out, code = cf("map-event", "orders", "orders.>")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring(`Error: invalid topic "orders.>": wildcards`))

		out, code = cf("map-event", "orders", "t", "--min", "7", "--max", "3")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("--min 7 is greater than --max 3"))

		cc.Revoke(clientID)
		cc.Grant(clientID, ccdouble.SpaceAuditor(spaceGUID))
		out, code = cf("map-event", "orders", "t")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: not authorized to change app 'orders'"))
		Expect(cc.App(orders).Annotations).To(BeEmpty())
		Expect(patches()).To(HaveLen(1)) // the refused one

		cc.Down()
		out, code = cf("event-mappings")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: cannot reach Cloud Controller at " + cc.URL()))
		cc.Up()

		mustCF("logout")
		out, code = cf("unmap-event", "orders", "t")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: not logged in: use 'cf login' first"))
	})

	it("refuses an app without a hottopic binding and accepts one bound to the broker's bus", func() {
		out, code := cf("map-event", "web", "orders.created")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: " + mapping.NoBinding("web", []string{"hottopic-nats"}).Error() + "\n"))
		Expect(cc.CallsTo(http.MethodPatch, "/v3/apps")).To(BeEmpty(), "nothing changed")

		bus := cc.AddServiceInstance(spaceGUID, "orders-bus", cc.AddServicePlan("hottopic", "standard", "hottopic", "nats", "events"))
		out, code = cf("map-event", "web", "orders.created")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: app web has no hottopic service binding: run cf bind-service web BUS, BUS one of hottopic-nats, orders-bus\n"))

		cc.BindService(web, bus)
		out = mustCF("map-event", "web", "orders.created")
		Expect(out).To(ContainSubstring("OK"))
		Expect(cc.App(web).Labels).To(HaveKeyWithValue(mapping.LabelMapped, "true"))
	})

	it("reads the scaler's live columns with cf's token", func() {
		// A real scaler on the CC double, behind the access layer of hottopic-scaler.
		srv := natstest.Run(t)
		js, err := jetstream.New(srv.Connect())
		Expect(err).NotTo(HaveOccurred())
		cc.AddClient("hottopic-scaler", "scaler-secret", ccdouble.SpaceDeveloper(spaceGUID))
		cfg := cfplatform.Config{API: cc.URL(), ClientID: "hottopic-scaler", ClientSecret: "scaler-secret", HTTPClient: cc.HTTPClient()}
		p, err := cfplatform.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		sc := scaler.New(js, p, scaler.WithPollInterval(50*time.Millisecond), scaler.WithDiscoveryInterval(100*time.Millisecond),
			scaler.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = sc.Run(ctx) }()
		defer func() { cancel(); <-done }()
		api := httptest.NewServer(scaler.Access{Tokens: cfplatform.NewTokens(cfg)}.Protect(sc.Handler()))
		defer api.Close()

		mustCF("map-event", "orders", "orders.created", "--max", "5")
		Eventually(func() string {
			out, _ := cf("event-mappings", "--scaler", api.URL)
			return out
		}, 20*time.Second, 200*time.Millisecond).Should(MatchRegexp(`(?m)^orders\s+orders.created\s+HT_orders_created\s+0\s+1/1\s+0/5\s+10\s+ok$`))
		var asCF int
		for _, c := range cc.CallsTo(http.MethodGet, "/v3/apps") {
			if c.Subject == clientID && c.Query().Get("space_guids") == "" {
				asCF++ // the scaler's check of the token cf gave the plugin
			}
		}
		Expect(asCF).To(BeNumerically(">=", 1))

		// Without cf's token the scaler shows nothing.
		resp, err := http.Get(api.URL + "/v1/mappings")
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	})

	it("uses the token cf refreshed for it", func() {
		// A user login has a refresh token (cf v8 keeps no client secret after
		// cf auth --client-credentials, so those tokens cannot be refreshed).
		cc.AddUser("dev@example.com", "user-pass", ccdouble.SpaceDeveloper(spaceGUID))
		cc.SetTokenLifetime(30 * time.Second) // cf refreshes tokens with less than a minute left
		mustCF("logout")
		mustCF("auth", "dev@example.com", "user-pass")
		out, code := cf("map-event", "orders", "orders.created") // cf auth forgets the target
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: no space targeted: use 'cf target -o ORG -s SPACE' first"))
		mustCF("target", "-o", "acme", "-s", "dev")
		cc.SetTokenLifetime(time.Hour)
		cc.ResetCalls()
		out = mustCF("map-event", "orders", "orders.created")
		Expect(out).To(ContainSubstring("as dev@example.com..."))
		refreshes := cc.CallsTo(http.MethodPost, "/uaa/oauth/token")
		Expect(refreshes).To(HaveLen(1))
		Expect(string(refreshes[0].Body)).To(ContainSubstring("grant_type=refresh_token"))
		var seq []string
		for _, c := range cc.CallsTo("", "/v3") {
			seq = append(seq, c.Method+" "+c.Path+" "+http.StatusText(c.Status))
		}
		Expect(seq).To(Equal([]string{"GET /v3/apps OK", "GET /v3/service_instances OK", "GET /v3/service_credential_bindings OK", "PATCH /v3/apps/" + orders + " OK"}))

		// standalone: refresh, write the token back, and cf still reads its config
		cc.SetTokenLifetime(30 * time.Second)
		mustCF("auth", "dev@example.com", "user-pass")
		mustCF("target", "-o", "acme", "-s", "dev")
		cc.SetTokenLifetime(time.Hour)
		cc.ResetCalls()
		out, code = hottopic("unmap-event", "orders", "orders.created")
		Expect(code).To(Equal(0), out)
		Expect(cc.CallsTo(http.MethodPost, "/uaa/oauth/token")).To(HaveLen(1))
		Expect(patches()).To(HaveLen(1))
		cc.ResetCalls()
		mustCF("target", "-o", "acme", "-s", "dev")
		Expect(cc.CallsTo(http.MethodPost, "/uaa/oauth/token")).To(BeEmpty(), "cf uses the fresh token hottopic saved")
	})

	it("lists, shows, refuses to redrive and purges dead letters through cf", func() {
		srv := natstest.Run(t)
		js, err := jetstream.New(srv.Connect())
		Expect(err).NotTo(HaveOccurred())
		_, err = provision.PublishDeadLetter(context.Background(), js, provision.DeadLetter{
			App: orders, Topic: "orders.created", Reason: "HTTP 400 Bad Request", Deliveries: 1, StreamSequence: 7, Data: []byte("payload-7"),
		}, provision.StreamOptions{})
		Expect(err).NotTo(HaveOccurred())
		cc.SetLabels(orders, map[string]string{"hottopic.io/mapped": "true"})
		env = append(env, "HOTTOPIC_NATS_URL="+srv.URL())

		out := mustCF("plugins")
		for _, c := range []string{"dead-letters", "dead-letter", "redrive-dead-letters", "purge-dead-letters", "replay", "dashboard"} {
			Expect(out).To(MatchRegexp(`hottopic\s+\S+\s+` + c + `\s`))
		}
		out = mustCF("dead-letters")
		Expect(out).To(ContainSubstring("Getting dead letters in org acme / space dev..."))
		Expect(out).To(MatchRegexp(`(?m)^1 +orders +orders.created .* HTTP 400 Bad Request +9 B$`))
		Expect(out).To(ContainSubstring("orders: 1 dead letter"))
		Expect(mustCF("dead-letter", "orders", "1", "--raw")).To(Equal("payload-7"))
		out, code := cf("redrive-dead-letters", "orders")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("Error: app 'orders' has no event mapping: map it again before redriving (its dead letters stay)"))
		out = mustCF("purge-dead-letters", "orders", "-f")
		Expect(out).To(ContainSubstring("Deleted 1 dead letter."))
		Expect(mustCF("dead-letters")).To(ContainSubstring("No dead letters."))
	})

	it("uninstalls cleanly", func() {
		mustCF("uninstall-plugin", "hottopic")
		Expect(mustCF("plugins")).NotTo(ContainSubstring("map-event"))
	})
}

// repoRoot is the module root, two levels above this file.
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// tool builds (or takes from the cache) a third-party tool.
func tool(t *testing.T, root, name string) string {
	out, err := exec.Command(filepath.Join(root, "scripts", "tools.sh"), name).Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}
