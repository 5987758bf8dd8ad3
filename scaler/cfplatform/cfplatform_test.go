package cfplatform_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

func TestCFPlatform(t *testing.T) {
	spec.Run(t, "CFPlatform", testCFPlatform, spec.Report(report.Terminal{}))
}

func testCFPlatform(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		ctx        = context.Background()
		cc         *ccdouble.CC
		space      string
	)
	const secret = "top-s3cret"

	it.Before(func() {
		cc = ccdouble.New(t)
		space = cc.AddSpace(cc.AddOrg("acme"), "prod")
		cc.AddClient("hottopic-scaler", secret, ccdouble.SpaceDeveloper(space))
	})

	newPlatform := func(mod func(*cfplatform.Config)) *cfplatform.Platform {
		cfg := cfplatform.Config{API: cc.URL(), ClientID: "hottopic-scaler", ClientSecret: secret}
		if mod != nil {
			mod(&cfg)
		}
		p, err := cfplatform.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		return p
	}

	when("configured from the environment", func() {
		env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

		it("reads CF_API, CF_CLIENT_ID, CF_CLIENT_SECRET and CF_SKIP_SSL_VALIDATION", func() {
			c, err := cfplatform.FromEnv(env(map[string]string{
				"CF_API": "https://api.example.com", "CF_CLIENT_ID": "scaler", "CF_CLIENT_SECRET": "x", "CF_SKIP_SSL_VALIDATION": "true",
			}))
			Expect(err).NotTo(HaveOccurred())
			Expect(c.API).To(Equal("https://api.example.com"))
			Expect(c.ClientID).To(Equal("scaler"))
			Expect(c.SkipSSLValidation).To(BeTrue())
			Expect(c.String()).NotTo(ContainSubstring("x\""))
		})

		it("takes the API from VCAP_APPLICATION when CF_API is unset", func() {
			c, err := cfplatform.FromEnv(env(map[string]string{
				"VCAP_APPLICATION": `{"cf_api":"https://api.sys.example.com"}`, "CF_CLIENT_ID": "scaler", "CF_CLIENT_SECRET": "x",
			}))
			Expect(err).NotTo(HaveOccurred())
			Expect(c.API).To(Equal("https://api.sys.example.com"))
		})

		it("names what is missing or wrong, one line each", func() {
			_, err := cfplatform.FromEnv(env(map[string]string{"CF_CLIENT_ID": "s", "CF_CLIENT_SECRET": "x"}))
			Expect(err).To(MatchError(ContainSubstring("CF_API is not set")))
			_, err = cfplatform.FromEnv(env(map[string]string{"CF_API": "https://a", "CF_CLIENT_SECRET": "x"}))
			Expect(err).To(MatchError(ContainSubstring("CF_CLIENT_ID is not set")))
			_, err = cfplatform.FromEnv(env(map[string]string{"CF_API": "https://a", "CF_CLIENT_ID": "s"}))
			Expect(err).To(MatchError(ContainSubstring("CF_CLIENT_SECRET is not set")))
			_, err = cfplatform.FromEnv(env(map[string]string{"CF_API": "api.example.com", "CF_CLIENT_ID": "s", "CF_CLIENT_SECRET": "x"}))
			Expect(err).To(MatchError(ContainSubstring("CF_API must be an http(s) URL")))
			_, err = cfplatform.FromEnv(env(map[string]string{"CF_API": "https://a", "CF_CLIENT_ID": "s", "CF_CLIENT_SECRET": "x", "CF_SKIP_SSL_VALIDATION": "yes please"}))
			Expect(err).To(MatchError(ContainSubstring("CF_SKIP_SSL_VALIDATION must be true or false")))
		})
	})

	when("listing mapped apps", func() {
		it("uses the label selector, follows every page and reads web processes in bulk", func() {
			var want []string
			for i := range 7 {
				name := fmt.Sprintf("fn-%d", i)
				g := cc.AddApp(space, name, map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "t" + fmt.Sprint(i)})
				cc.SetInstances(g, "web", i)
				want = append(want, name)
			}
			cc.AddApp(space, "web-only", nil, nil)
			cc.AddApp(space, "unmapped", map[string]string{mapping.LabelMapped: "false"}, nil)

			p := newPlatform(func(c *cfplatform.Config) { c.PageSize = 3 })
			apps, err := p.MappedApps(ctx)
			Expect(err).NotTo(HaveOccurred())
			var names []string
			for _, a := range apps {
				names = append(names, a.Name)
				Expect(a.Annotations).To(HaveKey(mapping.AnnTopics))
			}
			sort.Strings(names)
			Expect(names).To(Equal(want))

			list := cc.CallsTo("GET", "/v3/apps")
			Expect(list).To(HaveLen(3), "7 apps in pages of 3")
			Expect(list[0].Query().Get("label_selector")).To(Equal("hottopic.io/mapped=true"))

			cc.ResetCalls()
			for _, a := range apps {
				n, err := p.Instances(ctx, a.GUID)
				Expect(err).NotTo(HaveOccurred())
				Expect(n).To(Equal(cc.Instances(a.GUID, "web")))
			}
			Expect(cc.Calls()).To(BeEmpty(), "instances come from the bulk read")
		})
	})

	when("reading and scaling", func() {
		it("reads the web process and scales it, to zero too", func() {
			g := cc.AddApp(space, "fn", map[string]string{mapping.LabelMapped: "true"}, nil)
			cc.AddProcess(g, "worker", 5)
			p := newPlatform(nil)
			n, err := p.Instances(ctx, g)
			Expect(err).NotTo(HaveOccurred())
			Expect(n).To(Equal(1))
			Expect(p.Scale(ctx, g, 3)).To(Succeed())
			Expect(cc.Instances(g, "web")).To(Equal(3))
			Expect(cc.Instances(g, "worker")).To(Equal(5))
			Expect(p.Scale(ctx, g, 0)).To(Succeed())
			Expect(cc.Instances(g, "web")).To(Equal(0))
			calls := cc.ScaleCalls(g)
			Expect(calls).To(HaveLen(2))
			Expect(*calls[1].Instances).To(Equal(0))
			Expect(calls[1].ProcessType).To(Equal("web"))
		})

		it("keeps a scale's count over a listing that was under way meanwhile", func() {
			g := cc.AddApp(space, "fn", map[string]string{mapping.LabelMapped: "true"}, nil)
			p := newPlatform(nil)
			// The bulk read of web processes answers with the count before
			// the scale, and arrives after it.
			held, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			cc.OnCall(func(c ccdouble.Call) {
				if c.Method == "GET" && c.Path == "/v3/processes" {
					once.Do(func() { close(held); <-release })
				}
			})
			listed := make(chan error, 1)
			go func() { _, err := p.MappedApps(ctx); listed <- err }()
			<-held
			Expect(p.Scale(ctx, g, 3)).To(Succeed())
			close(release)
			Expect(<-listed).To(Succeed())

			n, err := p.Instances(ctx, g)
			Expect(err).NotTo(HaveOccurred())
			Expect(n).To(Equal(3), "the listing's older 1 would have the app scaled to 3 again")
		})

		it("refuses an unknown app without closing the gate for others", func() {
			g := cc.AddApp(space, "fn", nil, nil)
			p := newPlatform(nil)
			_, err := p.Instances(ctx, "no-such-app")
			Expect(err).To(MatchError(ContainSubstring("CF-ResourceNotFound")))
			_, err = p.Instances(ctx, g)
			Expect(err).NotTo(HaveOccurred())
		})
	})

	when("Cloud Controller is unwell", func() {
		it("backs off after 5xx and recovers", func() {
			g := cc.AddApp(space, "fn", nil, nil)
			p := newPlatform(nil)
			_, err := p.Instances(ctx, g) // connect and get a token first
			Expect(err).NotTo(HaveOccurred())
			cc.FailNext(ccdouble.Fault{Status: http.StatusServiceUnavailable, PathPrefix: "/v3/processes"})
			err = p.Scale(ctx, g, 2)
			Expect(err).To(MatchError(ContainSubstring("backing off 1s")))
			cc.ResetCalls()
			err = p.Scale(ctx, g, 2)
			Expect(err).To(MatchError(ContainSubstring("Cloud Controller unavailable, backing off 1s after the last error (next attempt in")))
			Expect(cc.Calls()).To(BeEmpty(), "the gate spares CC")
			Eventually(func() error { return p.Scale(ctx, g, 2) }, 5*time.Second, 100*time.Millisecond).Should(Succeed())
			Expect(cc.Instances(g, "web")).To(Equal(2))
		})

		it("honours Retry-After on 429", func() {
			g := cc.AddApp(space, "fn", nil, nil)
			p := newPlatform(nil)
			_, err := p.Instances(ctx, g)
			Expect(err).NotTo(HaveOccurred())
			// The platform's clock stands still from here, so the gate's
			// opening is exactly 7 s after the 429 however slow the test runs.
			start := time.Now()
			cfplatform.SetClock(p, func() time.Time { return start })
			cc.FailNext(ccdouble.Fault{Status: http.StatusTooManyRequests, RetryAfter: 7 * time.Second})
			err = p.Scale(ctx, g, 2)
			Expect(err).To(MatchError(ContainSubstring("backing off 7s")))
			err = p.Scale(ctx, g, 2)
			Expect(err).To(MatchError(MatchRegexp(`backing off 7s after the last error \(next attempt in (6\.\ds|7s)\)`)))

			// Just before the gate opens, the message still says the back-off
			// is seconds, not "next attempt in 1ms" alone.
			cfplatform.SetClock(p, func() time.Time { return start.Add(7*time.Second - time.Millisecond) })
			err = p.Scale(ctx, g, 2)
			Expect(err).To(MatchError(ContainSubstring("backing off 7s after the last error (next attempt in 100ms)")))
			Expect(err.Error()).NotTo(ContainSubstring("1ms"))
		})

		it("starts while CC is down and connects once it is up", func() {
			g := cc.AddApp(space, "fn", map[string]string{mapping.LabelMapped: "true"}, nil)
			cc.Down()
			p := newPlatform(nil)
			_, err := p.MappedApps(ctx)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).NotTo(ContainSubstring(secret))
			cc.Up()
			Eventually(func() error { _, err := p.MappedApps(ctx); return err }, 5*time.Second, 100*time.Millisecond).Should(Succeed())
			n, err := p.Instances(ctx, g)
			Expect(err).NotTo(HaveOccurred())
			Expect(n).To(Equal(1))
		})
	})

	when("the token expires", func() {
		it("gets a new one and retries", func() {
			g := cc.AddApp(space, "fn", nil, nil)
			p := newPlatform(nil)
			Expect(p.Scale(ctx, g, 2)).To(Succeed())
			issued := cc.TokensIssued()
			cc.ExpireTokens()
			Expect(p.Scale(ctx, g, 3)).To(Succeed())
			Expect(cc.TokensIssued()).To(Equal(issued + 1))
			Expect(cc.Instances(g, "web")).To(Equal(3))
		})

		it("refreshes a short-lived token before it runs out", func() {
			cc.SetTokenLifetime(12 * time.Second) // oauth2 renews 10 s before expiry
			g := cc.AddApp(space, "fn", nil, nil)
			p := newPlatform(func(c *cfplatform.Config) { c.CacheTTL = time.Nanosecond })
			_, err := p.Instances(ctx, g)
			Expect(err).NotTo(HaveOccurred())
			issued := cc.TokensIssued()
			Eventually(func() int {
				_, err := p.Instances(ctx, g)
				Expect(err).NotTo(HaveOccurred())
				return cc.TokensIssued()
			}, 8*time.Second, 200*time.Millisecond).Should(BeNumerically(">", issued))
			for _, c := range cc.Calls() {
				Expect(c.Status).NotTo(Equal(http.StatusUnauthorized), "renewed before CC had to refuse it")
			}
		})
	})

	when("CC serves TLS with a self-signed certificate", func() {
		it("connects with CF_SKIP_SSL_VALIDATION and refuses without it", func() {
			tlsCC := ccdouble.New(t, ccdouble.WithTLS())
			sp := tlsCC.AddSpace(tlsCC.AddOrg("o"), "s")
			tlsCC.AddClient("hottopic-scaler", secret, ccdouble.SpaceDeveloper(sp))
			tlsCC.AddApp(sp, "fn", map[string]string{mapping.LabelMapped: "true"}, nil)

			strict, err := cfplatform.New(cfplatform.Config{API: tlsCC.URL(), ClientID: "hottopic-scaler", ClientSecret: secret})
			Expect(err).NotTo(HaveOccurred())
			_, err = strict.MappedApps(ctx)
			Expect(err).To(MatchError(ContainSubstring("certificate")))

			lax, err := cfplatform.New(cfplatform.Config{API: tlsCC.URL(), ClientID: "hottopic-scaler", ClientSecret: secret, SkipSSLValidation: true})
			Expect(err).NotTo(HaveOccurred())
			apps, err := lax.MappedApps(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(apps).To(HaveLen(1))
		})
	})
}
