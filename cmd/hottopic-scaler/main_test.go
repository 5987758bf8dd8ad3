package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/scaler/api"
)

func TestScalerCommand(t *testing.T) {
	spec.Run(t, "hottopic-scaler", testCommand, spec.Report(report.Terminal{}))
}

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

func testCommand(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		bin        string
	)

	it.Before(func() {
		bin = proctest.Build(t, "./cmd/hottopic-scaler")
	})

	// start runs the scaler with only env (and PATH, a fresh HOME); stdout is
	// p.Out, stderr the returned buffer.
	start := func(env ...string) (*proctest.Proc, *gbytes.Buffer) {
		cmd := exec.Command(bin)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
		stderr := gbytes.NewBuffer()
		cmd.Stderr = stderr
		return proctest.Start(t, cmd), stderr
	}

	when("its configuration is incomplete", func() {
		it("exits 1 with one line naming what is missing", func() {
			p, stderr := start("HOTTOPIC_NATS_URL=nats://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y")
			Expect(p.ExitCode()).To(Equal(1))
			Expect(string(stderr.Contents())).To(Equal("hottopic-scaler: CF_API is not set (the Cloud Controller URL, e.g. https://api.example.com)\n"))

			p, stderr = start("CF_API=http://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y", "HOTTOPIC_NATS_URL=nats://127.0.0.1:1", "HOTTOPIC_POLL_INTERVAL=often")
			Expect(p.ExitCode()).To(Equal(1))
			Expect(string(stderr.Contents())).To(ContainSubstring("HOTTOPIC_POLL_INTERVAL must be a positive Go duration"))

			p, stderr = start("CF_API=http://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y")
			Expect(p.ExitCode()).To(Equal(1))
			Expect(string(stderr.Contents())).To(ContainSubstring("no NATS server configured"))

			// Broker mode needs all of scaler.env, not part of it.
			p, stderr = start("CF_API=http://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y", "HOTTOPIC_NATS_URL=nats://127.0.0.1:1", "HOTTOPIC_STATE_KEY=c2VjcmV0")
			Expect(p.ExitCode()).To(Equal(1))
			Expect(string(stderr.Contents())).To(Equal("hottopic-scaler: HOTTOPIC_INTERNAL_ACCOUNT_KEY is not set (the service broker's state needs HOTTOPIC_STATE_KEY, HOTTOPIC_INTERNAL_ACCOUNT_KEY, HOTTOPIC_INTERNAL_ACCOUNT; hottopic-broker init writes them)\n"))

			p, stderr = start("CF_API=http://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y", "HOTTOPIC_NATS_URL=nats://127.0.0.1:1", "HOTTOPIC_METRICS_USERNAME=prometheus")
			Expect(p.ExitCode()).To(Equal(1))
			Expect(string(stderr.Contents())).To(Equal("hottopic-scaler: HOTTOPIC_METRICS_USERNAME is set but HOTTOPIC_METRICS_PASSWORD is not: /metrics takes both (HTTP basic auth)\n"))
		})
	})

	when("NATS is down when it starts", func() {
		it("answers its health check, waits for NATS and then scales; SIGTERM while waiting exits 0", func() {
			ns := natstest.Run(t)
			natsURL := ns.URL()
			ns.Shutdown()
			cc := ccdouble.New(t)
			space := cc.AddSpace(cc.AddOrg("acme"), "prod")
			cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(space))
			guid := cc.AddApp(space, "thumbnailer", map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "images.uploaded"})
			cc.SetInstances(guid, "web", 0)
			env := []string{"CF_API=" + cc.URL(), "CF_CLIENT_ID=hottopic-scaler", "CF_CLIENT_SECRET=s3cret",
				"HOTTOPIC_NATS_URL=" + natsURL, "HOTTOPIC_POLL_INTERVAL=100ms", "HOTTOPIC_DISCOVERY_INTERVAL=200ms"}
			port := proctest.FreePort(t)
			p, _ := start(append(env, fmt.Sprintf("PORT=%d", port))...)
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			cc.AddUser("alice", "pw", ccdouble.SpaceDeveloper(space))
			alice := cc.IssueToken("alice", time.Hour)
			get := func(path string) (int, string) { return getWith(base+path, alice) }
			Eventually(func() int { code, _ := get("/healthz"); return code }, 10*time.Second, 50*time.Millisecond).Should(Equal(http.StatusOK), p.Output)
			_, health := get("/healthz")
			Expect(health).To(ContainSubstring(`"nats_connected": false`))
			code, body := getWith(base+api.Path, "")
			Expect(code).To(Equal(http.StatusUnauthorized), "no data without a token, even while waiting")
			code, body = get(api.Path)
			Expect(code).To(Equal(http.StatusServiceUnavailable))
			Expect(body).To(ContainSubstring("waiting for NATS"))
			code, body = getWith(base+"/metrics", "")
			Expect(code).To(Equal(http.StatusUnauthorized))
			Expect(body).To(ContainSubstring("/metrics is off: the scaler has no scrape credential (set HOTTOPIC_METRICS_USERNAME and HOTTOPIC_METRICS_PASSWORD)"))
			Eventually(p.Output, 10*time.Second).Should(ContainSubstring("NATS unreachable; waiting for it"))

			ns.Restart()
			Eventually(func() bool {
				_, body := get(api.Path)
				return strings.Contains(body, `"leader": true`) && strings.Contains(body, `"lag_known": true`)
			}, 20*time.Second, 100*time.Millisecond).Should(BeTrue(), p.Output)
			js, err := jetstream.New(ns.Connect())
			Expect(err).NotTo(HaveOccurred())
			_, err = js.Publish(context.Background(), "images.uploaded", []byte("cat.jpg"))
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() int { return cc.Instances(guid, "web") }, 10*time.Second).Should(Equal(1))
			Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
			Expect(p.Wait()).To(Succeed())

			// Stopped while still waiting: a clean exit, not a failure.
			ns.Shutdown()
			p, _ = start(append(env, fmt.Sprintf("PORT=%d", proctest.FreePort(t)))...)
			Eventually(p.Output, 10*time.Second).Should(ContainSubstring("NATS unreachable; waiting for it"))
			Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
			Expect(p.Wait()).To(Succeed())
			Expect(p.Output()).To(ContainSubstring("scaler stopped"))
		})
	})

	when("it runs against Cloud Controller and NATS", func() {
		it("serves its API, scales a mapped app on its first event and stops cleanly on SIGTERM", func() {
			ns := natstest.Run(t)
			cc := ccdouble.New(t)
			space := cc.AddSpace(cc.AddOrg("acme"), "prod")
			cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(space))
			guid := cc.AddApp(space, "thumbnailer", map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "images.uploaded"})
			cc.SetInstances(guid, "web", 0)
			port := proctest.FreePort(t)
			vcap := fmt.Sprintf(`{"user-provided":[{"name":"hottopic-nats","label":"user-provided","tags":["hottopic"],"credentials":{"uri":%q}}]}`, ns.URL())
			p, _ := start("CF_API="+cc.URL(), "CF_CLIENT_ID=hottopic-scaler", "CF_CLIENT_SECRET=s3cret",
				"VCAP_SERVICES="+vcap, fmt.Sprintf("PORT=%d", port),
				"HOTTOPIC_POLL_INTERVAL=100ms", "HOTTOPIC_DISCOVERY_INTERVAL=200ms")

			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			var body api.Mappings
			cc.AddUser("alice", "pw", ccdouble.SpaceDeveloper(space))
			alice := cc.IssueToken("alice", time.Hour)
			Eventually(func() bool {
				_, raw := getWith(base+api.Path, alice)
				body = api.Mappings{}
				_ = json.Unmarshal([]byte(raw), &body)
				return body.Leader && len(body.Mappings) == 1 && body.Mappings[0].LagKnown
			}, 20*time.Second, 100*time.Millisecond).Should(BeTrue(), p.Output)
			Expect(body.Mappings[0].AppName).To(Equal("thumbnailer"))

			js, err := jetstream.New(ns.Connect())
			Expect(err).NotTo(HaveOccurred())
			_, err = js.Publish(context.Background(), "images.uploaded", []byte("cat.jpg"))
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() int { return cc.Instances(guid, "web") }, 10*time.Second).Should(Equal(1))
			Eventually(p.Output, 5*time.Second).Should(ContainSubstring(`msg="scaled thumbnailer 0 → 1: lag 1, 10 per instance"`))

			resp, err := http.Get(base + "/healthz")
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(http.StatusOK))

			Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
			Expect(p.Wait()).To(Succeed())
			Expect(p.Output()).To(ContainSubstring("scaler stopped"))
			Expect(p.Output()).NotTo(ContainSubstring("s3cret"))
		})
	})

	when("callers of its API prove who they are", func() {
		it("shows each Cloud Foundry token only the apps it may see, and /metrics only to the scrape credential", func() {
			ns := natstest.Run(t)
			cc := ccdouble.New(t)
			org := cc.AddOrg("acme")
			prod, other := cc.AddSpace(org, "prod"), cc.AddSpace(org, "ledger")
			cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(prod), ccdouble.SpaceDeveloper(other))
			mapped := func(space, name, topic string) string {
				return cc.AddApp(space, name, map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: topic})
			}
			thumbs, ledger := mapped(prod, "thumbnailer", "images.uploaded"), mapped(other, "ledger", "payments.booked")
			cc.AddUser("alice", "pw", ccdouble.SpaceDeveloper(prod))
			cc.AddUser("bob", "pw", ccdouble.SpaceAuditor(other))
			cc.AddUser("carol", "pw") // in no space at all
			alice, bob, carol := cc.IssueToken("alice", time.Hour), cc.IssueToken("bob", time.Hour), cc.IssueToken("carol", time.Hour)
			port := proctest.FreePort(t)
			vcap := fmt.Sprintf(`{"user-provided":[{"name":"hottopic-nats","label":"user-provided","tags":["hottopic"],"credentials":{"uri":%q}}]}`, ns.URL())
			p, _ := start("CF_API="+cc.URL(), "CF_CLIENT_ID=hottopic-scaler", "CF_CLIENT_SECRET=s3cret",
				"VCAP_SERVICES="+vcap, fmt.Sprintf("PORT=%d", port), "HOTTOPIC_POLL_INTERVAL=100ms", "HOTTOPIC_DISCOVERY_INTERVAL=200ms",
				"HOTTOPIC_METRICS_USERNAME=prometheus", "HOTTOPIC_METRICS_PASSWORD=scrape-s3cret")
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			apps := func(tok string) []string {
				code, raw := getWith(base+api.Path, tok)
				Expect(code).To(Equal(http.StatusOK), raw)
				var body api.Mappings
				Expect(json.Unmarshal([]byte(raw), &body)).To(Succeed())
				names := []string{}
				for _, m := range body.Mappings {
					names = append(names, m.AppName)
				}
				return names
			}
			// The scaler itself sees both apps: wait until both are in effect.
			Eventually(func() string { _, m := getBasic(base+"/metrics", "prometheus", "scrape-s3cret"); return m }, 20*time.Second, 100*time.Millisecond).
				Should(And(ContainSubstring(`hottopic_scaler_app_valid{app="ledger"`), ContainSubstring(`hottopic_scaler_app_valid{app="thumbnailer"`)), p.Output)

			// No token: nothing but /healthz and the page.
			for _, path := range []string{api.Path, "/v1/dashboard", "/v1/dead-letters?app=" + thumbs, "/nope"} {
				code, raw := getWith(base+path, "")
				Expect(code).To(Equal(http.StatusUnauthorized), path)
				Expect(raw).To(MatchJSON(`{"error": "no token: send Authorization: bearer TOKEN, a Cloud Foundry token (cf oauth-token prints one)"}`))
			}
			code, _ := getWith(base+"/healthz", "")
			Expect(code).To(Equal(http.StatusOK))
			code, page := getWith(base+"/", "")
			Expect(code).To(Equal(http.StatusOK))
			Expect(page).To(ContainSubstring("<html"))

			// Each token sees the apps of its own spaces only.
			Expect(apps(alice)).To(Equal([]string{"thumbnailer"}))
			Expect(apps(bob)).To(Equal([]string{"ledger"}))
			Expect(apps(carol)).To(BeEmpty())
			code, raw := getWith(base+"/v1/dashboard", bob)
			Expect(code).To(Equal(http.StatusOK))
			Expect(raw).To(ContainSubstring(ledger))
			Expect(raw).NotTo(ContainSubstring(thumbs))
			code, raw = getWith(base+"/v1/dead-letters?app="+thumbs, bob)
			Expect(code).To(Equal(http.StatusNotFound), raw)
			code, raw = getWith(base+"/v1/dead-letters?app="+thumbs, alice)
			Expect(code).To(Equal(http.StatusOK), raw)
			checks := cc.CallsTo(http.MethodGet, "/v3/apps")
			var asAlice int
			for _, c := range checks {
				if c.Subject == "alice" {
					asAlice++
					Expect(c.Query().Get("label_selector")).To(Equal(mapping.LabelMapped + "=true"))
				}
			}
			Expect(asAlice).To(Equal(1), "one check per token while its answer is kept")

			// Expired, revoked or made-up tokens: 401, as from CC.
			for _, tok := range []string{cc.IssueToken("alice", -time.Minute), "bearer not-a-jwt"} {
				code, raw := getWith(base+api.Path, tok)
				Expect(code).To(Equal(http.StatusUnauthorized))
				Expect(raw).To(MatchJSON(`{"error": "Cloud Controller rejected the token (expired or invalid): get a fresh one with cf oauth-token"}`))
			}

			// /metrics: the scrape credential, nothing else.
			code, raw = getWith(base+"/metrics", alice)
			Expect(code).To(Equal(http.StatusUnauthorized))
			Expect(raw).To(ContainSubstring("/metrics needs the scrape credential (HTTP basic auth)"))
			code, raw = getBasic(base+"/metrics", "prometheus", "guess")
			Expect(code).To(Equal(http.StatusUnauthorized))
			Expect(raw).To(ContainSubstring("wrong scrape credential"))
			code, _ = getBasic(base+"/metrics", "prometheus", "scrape-s3cret")
			Expect(code).To(Equal(http.StatusOK))

			Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
			Expect(p.Wait()).To(Succeed())
			for _, secret := range []string{alice, bob, strings.TrimPrefix(alice, "bearer "), "scrape-s3cret"} {
				Expect(p.Output()).NotTo(ContainSubstring(secret))
			}
		})
	})
}

// getWith GETs u with an Authorization header (none when auth is "").
func getWith(u, auth string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, err.Error()
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return do(req)
}

// getBasic GETs u with HTTP basic auth.
func getBasic(u, user, password string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, err.Error()
	}
	req.SetBasicAuth(user, password)
	return do(req)
}

func do(req *http.Request) (int, string) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, resp.Body)
	return resp.StatusCode, b.String()
}
