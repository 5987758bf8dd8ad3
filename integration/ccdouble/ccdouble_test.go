package ccdouble_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	"github.com/cloudfoundry/go-cfclient/v3/config"
	"github.com/cloudfoundry/go-cfclient/v3/resource"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
)

func TestCCDouble(t *testing.T) {
	spec.Run(t, "ccdouble", testCCDouble, spec.Report(report.Terminal{}))
}

// ccErr is the first entry of a CC error envelope.
type ccErr struct {
	Code   int    `json:"code"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func testCCDouble(t *testing.T, when spec.G, it spec.S) {
	var (
		g          = NewWithT(t)
		Expect     = g.Expect
		Eventually = g.Eventually
		ctx        = context.Background()
		cc         *ccdouble.CC
		space      string
		other      string
	)

	it.Before(func() {
		cc = ccdouble.New(t)
		org := cc.AddOrg("acme")
		space = cc.AddSpace(org, "prod")
		other = cc.AddSpace(org, "secret")
		cc.AddClient("scaler", "s3cret", ccdouble.SpaceDeveloper(space))
		cc.AddClient("admin", "admin-secret", ccdouble.Admin())
		cc.AddClient("auditor", "audit-secret", ccdouble.SpaceAuditor(space))
	})

	cfClient := func(id, secret string) *client.Client {
		cfg, err := config.New(cc.URL(), config.ClientCredentials(id, secret))
		Expect(err).NotTo(HaveOccurred())
		cf, err := client.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		return cf
	}

	// token gets an access token by the client_credentials grant.
	token := func(id, secret string) string {
		req, err := http.NewRequest(http.MethodPost, cc.TokenURL(), strings.NewReader("grant_type=client_credentials"))
		Expect(err).NotTo(HaveOccurred())
		req.SetBasicAuth(id, secret)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		var body struct {
			AccessToken string `json:"access_token"`
		}
		Expect(json.NewDecoder(resp.Body).Decode(&body)).To(Succeed())
		return body.AccessToken
	}

	// do sends a raw request and returns status, the error envelope's first
	// entry (if any) and the body.
	do := func(method, path, tok, body string) (int, ccErr, []byte) {
		req, err := http.NewRequest(method, cc.URL()+path, strings.NewReader(body))
		Expect(err).NotTo(HaveOccurred())
		if tok != "" {
			req.Header.Set("Authorization", "bearer "+tok)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		var env struct{ Errors []ccErr }
		_ = json.Unmarshal(raw, &env)
		var first ccErr
		if len(env.Errors) > 0 {
			first = env.Errors[0]
		}
		return resp.StatusCode, first, raw
	}

	cfError := func(err error) resource.CloudFoundryError {
		var cfErr resource.CloudFoundryError
		Expect(errors.As(err, &cfErr)).To(BeTrue(), "not a CC error: %v", err)
		return cfErr
	}

	when("go-cfclient lists apps with a label selector", func() {
		it("pages through every match with absolute next links", func() {
			for i := range 5 {
				labels := map[string]string{"hottopic.io/enabled": "true", "tier": "worker"}
				if i%2 == 1 {
					labels["tier"] = "web"
				}
				cc.AddApp(space, fmt.Sprintf("app-%d", i), labels, nil)
			}
			cc.AddApp(space, "plain", nil, nil)
			cc.AddApp(other, "hidden", map[string]string{"hottopic.io/enabled": "true", "tier": "worker"}, nil)

			cf := cfClient("scaler", "s3cret")
			opts := client.NewAppListOptions()
			opts.PerPage = 1
			opts.LabelSel = client.LabelSelector{}
			opts.LabelSel.EqualTo("hottopic.io/enabled", "true")
			opts.LabelSel.EqualTo("tier", "worker", "batch")
			apps, err := cf.Applications.ListAll(ctx, opts)
			Expect(err).NotTo(HaveOccurred())
			var names []string
			for _, a := range apps {
				names = append(names, a.Name)
			}
			Expect(names).To(Equal([]string{"app-0", "app-2", "app-4"}))

			lists := cc.CallsTo(http.MethodGet, "/v3/apps")
			Expect(lists).To(HaveLen(3))
			Expect(lists[2].Query().Get("page")).To(Equal("3"))
			Expect(lists[0].Subject).To(Equal("scaler"))

			_, _, raw := do(http.MethodGet, "/v3/apps?per_page=2&label_selector=tier%3Dworker", token("scaler", "s3cret"), "")
			var page resource.AppList
			Expect(json.Unmarshal(raw, &page)).To(Succeed())
			Expect(page.Pagination.TotalResults).To(Equal(3))
			Expect(page.Pagination.TotalPages).To(Equal(2))
			Expect(page.Pagination.Next.Href).To(HavePrefix(cc.URL() + "/v3/apps?"))
			Expect(page.Pagination.Next.Href).To(ContainSubstring("page=2"))
			Expect(page.Pagination.Next.Href).To(ContainSubstring("label_selector=tier%3Dworker"))
		})
	})

	when("go-cfclient patches metadata", func() {
		it("deep-merges, deletes null keys and rejects invalid keys with 422", func() {
			guid := cc.AddApp(space, "orders", map[string]string{"keep": "yes", "drop": "me"}, map[string]string{"note": "x"})
			cf := cfClient("scaler", "s3cret")
			md := resource.NewMetadata().WithLabel("hottopic.io", "enabled", "true").WithAnnotation("hottopic.io", "topics", "orders,payments")
			md.RemoveLabel("", "drop")
			// as on CC, go-cfclient's AppUpdate must carry the name: it sends "name":"" otherwise
			_, err := cf.Applications.Update(ctx, guid, &resource.AppUpdate{Metadata: md})
			Expect(cfError(err).Code).To(Equal(10008))
			Expect(cc.App(guid).Labels).To(HaveKey("drop"))

			app, err := cf.Applications.Update(ctx, guid, &resource.AppUpdate{Name: "orders", Metadata: md})
			Expect(err).NotTo(HaveOccurred())
			Expect(app.Metadata.Labels).To(HaveKey("hottopic.io/enabled"))

			got := cc.App(guid)
			Expect(got.Labels).To(Equal(map[string]string{"keep": "yes", "hottopic.io/enabled": "true"}))
			Expect(got.Annotations).To(Equal(map[string]string{"note": "x", "hottopic.io/topics": "orders,payments"}))

			_, err = cf.Applications.Update(ctx, guid, &resource.AppUpdate{Name: "orders", Metadata: resource.NewMetadata().WithLabel("", "bad key", "v")})
			Expect(cfError(err).Code).To(Equal(10008))
			Expect(cc.App(guid).Labels).To(HaveLen(2))
		})
	})

	when("go-cfclient scales a process", func() {
		it("changes instances, answers 202 with the process and records the call", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			cf := cfClient("scaler", "s3cret")
			web, err := cf.Processes.FirstForApp(ctx, guid, client.NewProcessOptions())
			Expect(err).NotTo(HaveOccurred())
			Expect(web.Type).To(Equal("web"))
			Expect(web.Instances).To(Equal(1))

			p, err := cf.Processes.Scale(ctx, web.GUID, resource.NewProcessScale().WithInstances(3))
			Expect(err).NotTo(HaveOccurred())
			Expect(p.Instances).To(Equal(3))
			Expect(cc.App(guid).Instances).To(Equal(3))

			stats, err := cf.Processes.GetStats(ctx, web.GUID)
			Expect(err).NotTo(HaveOccurred())
			Expect(stats.Stats).To(HaveLen(3))
			Expect(stats.Stats[2].State).To(Equal("RUNNING"))

			calls := cc.ScaleCalls(guid)
			Expect(calls).To(HaveLen(1))
			Expect(*calls[0].Instances).To(Equal(3))
			Expect(calls[0].Status).To(Equal(http.StatusAccepted))
		})
	})

	when("the access token expires", func() {
		it("answers 401 CF-InvalidAuthToken and go-cfclient fetches a new token", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			cf := cfClient("scaler", "s3cret")
			_, err := cf.Applications.Get(ctx, guid)
			Expect(err).NotTo(HaveOccurred())
			Expect(cc.TokensIssued()).To(Equal(1))

			cc.ExpireTokens()
			_, err = cf.Applications.Get(ctx, guid)
			Expect(err).NotTo(HaveOccurred())
			Expect(cc.TokensIssued()).To(Equal(2))
			gets := cc.CallsTo(http.MethodGet, "/v3/apps/"+guid)
			Expect(gets).To(HaveLen(3))
			Expect(gets[1].Status).To(Equal(http.StatusUnauthorized))
			Expect(gets[2].Status).To(Equal(http.StatusOK))
		})
	})

	when("requests are malformed or unauthenticated", func() {
		it("answers with CC's codes and the error envelope", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			tok := token("scaler", "s3cret")
			for _, tc := range []struct {
				method, path, tok, body string
				status, code            int
			}{
				{"GET", "/v3/apps", "", "", 401, 10002},
				{"GET", "/v3/apps", "not-a-jwt", "", 401, 1000},
				{"GET", "/v3/apps/" + guid, tok + "x", "", 401, 1000},
				{"GET", "/v3/apps?per_page=0", tok, "", 400, 10005},
				{"GET", "/v3/apps?per_page=5001", tok, "", 400, 10005},
				{"GET", "/v3/apps?page=0", tok, "", 400, 10005},
				{"GET", "/v3/apps?colour=red", tok, "", 400, 10005},
				{"GET", "/v3/apps?label_selector=env%3D%3D%3Dprod", tok, "", 400, 10005},
				{"GET", "/v3/apps?label_selector=", tok, "", 400, 10005},
				{"GET", "/v3/apps/no-such-guid", tok, "", 404, 10010},
				{"GET", "/v3/nothing-here", tok, "", 404, 10000},
				{"PATCH", "/v3/apps/" + guid, tok, `{"metadata":{"labels":{"a":"b"}},"colour":"red"}`, 422, 10008},
				{"PATCH", "/v3/apps/" + guid, tok, `{"metadata":{"labels":{"a":"b c"}}}`, 422, 10008},
				{"PATCH", "/v3/apps/" + guid, tok, `{not json`, 400, 1001},
				{"POST", "/v3/apps/" + guid + "/processes/web/actions/scale", tok, `{"instances":-1}`, 422, 10008},
				{"POST", "/v3/apps/" + guid + "/processes/web/actions/scale", tok, `{"instances":1.5}`, 422, 10008},
				{"POST", "/v3/apps/" + guid + "/processes/web/actions/scale", tok, `{"instances":"2"}`, 422, 10008},
				{"POST", "/v3/apps/" + guid + "/processes/web/actions/scale", tok, `{"instances":2,"colour":"red"}`, 422, 10008},
				{"POST", "/v3/apps/" + guid + "/processes/worker/actions/scale", tok, `{"instances":2}`, 404, 10010},
				{"POST", "/v3/processes/no-such-guid/actions/scale", tok, `{"instances":2}`, 404, 10010},
			} {
				status, e, raw := do(tc.method, tc.path, tc.tok, tc.body)
				Expect(status).To(Equal(tc.status), "%s %s: %s", tc.method, tc.path, raw)
				Expect(e.Code).To(Equal(tc.code), "%s %s: %s", tc.method, tc.path, raw)
				Expect(e.Title).To(HavePrefix("CF-"), "%s %s", tc.method, tc.path)
				Expect(e.Detail).NotTo(BeEmpty())
			}
			Expect(cc.App(guid).Instances).To(Equal(1))
			Expect(cc.App(guid).Labels).To(BeEmpty())
		})

		it("rejects bad UAA credentials in UAA's format", func() {
			_, err := config.New(cc.URL(), config.ClientCredentials("scaler", "wrong"))
			Expect(err).NotTo(HaveOccurred()) // discovery only; the token is fetched on first use
			cfg, _ := config.New(cc.URL(), config.ClientCredentials("scaler", "wrong"))
			cf, err := client.New(cfg)
			Expect(err).NotTo(HaveOccurred())
			_, err = cf.Applications.ListAll(ctx, nil)
			Expect(err).To(MatchError(ContainSubstring("Bad credentials")))
			Expect(cc.CallsTo("GET", "/v3/apps")).To(BeEmpty())
		})
	})

	when("callers have different roles", func() {
		it("hides other spaces and forbids writes to read-only roles", func() {
			mine := cc.AddApp(space, "orders", nil, nil)
			hidden := cc.AddApp(other, "billing", nil, nil)

			apps, err := cfClient("auditor", "audit-secret").Applications.ListAll(ctx, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(apps).To(HaveLen(1))
			Expect(apps[0].GUID).To(Equal(mine))

			auditor := cfClient("auditor", "audit-secret")
			web, err := auditor.Processes.FirstForApp(ctx, mine, client.NewProcessOptions())
			Expect(err).NotTo(HaveOccurred())
			_, err = auditor.Processes.Scale(ctx, web.GUID, resource.NewProcessScale().WithInstances(2))
			Expect(cfError(err).Code).To(Equal(10003))
			_, err = auditor.Applications.Update(ctx, mine, &resource.AppUpdate{Name: "orders", Metadata: resource.NewMetadata().WithLabel("", "a", "b")})
			Expect(cfError(err).Code).To(Equal(10003))
			_, err = auditor.Applications.Get(ctx, hidden)
			Expect(cfError(err).Code).To(Equal(10010))

			scaler := cfClient("scaler", "s3cret")
			_, err = scaler.Processes.Scale(ctx, cc.ProcessGUID(hidden, "web"), resource.NewProcessScale().WithInstances(2))
			Expect(cfError(err).Code).To(Equal(10010))

			all, err := cfClient("admin", "admin-secret").Applications.ListAll(ctx, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(all).To(HaveLen(2))
			Expect(cc.App(mine).Instances).To(Equal(1))
			Expect(cc.App(hidden).Instances).To(Equal(1))
		})

		it("lets a space supporter scale but not relabel, and honours app_scaling and deployments", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			cc.AddClient("supporter", "sup", ccdouble.SpaceSupporter(space))
			sup := cfClient("supporter", "sup")
			_, err := sup.Processes.Scale(ctx, cc.ProcessGUID(guid, "web"), resource.NewProcessScale().WithInstances(0))
			Expect(err).NotTo(HaveOccurred())
			Expect(cc.App(guid).Instances).To(Equal(0))
			_, err = sup.Applications.Update(ctx, guid, &resource.AppUpdate{Name: "orders"})
			Expect(cfError(err).Code).To(Equal(10003))

			cc.SetFeatureFlag("app_scaling", false)
			_, err = sup.Processes.Scale(ctx, cc.ProcessGUID(guid, "web"), resource.NewProcessScale().WithInstances(2))
			Expect(cfError(err).Code).To(Equal(330002))
			_, err = cfClient("admin", "admin-secret").Processes.Scale(ctx, cc.ProcessGUID(guid, "web"), resource.NewProcessScale().WithInstances(2))
			Expect(err).NotTo(HaveOccurred())

			cc.SetDeploying(guid, true)
			_, err = cfClient("admin", "admin-secret").Processes.Scale(ctx, cc.ProcessGUID(guid, "web"), resource.NewProcessScale().WithInstances(3))
			Expect(cfError(err).Detail).To(ContainSubstring("deployment is in flight"))
			Expect(cc.App(guid).Instances).To(Equal(2))
		})

		it("answers 403 CF-InsufficientScope to a token without cloud_controller scopes", func() {
			cc.AddClient("bare", "bare-secret", ccdouble.SpaceDeveloper(space))
			cc.SetScopes("bare", "uaa.none")
			status, e, _ := do("GET", "/v3/apps", token("bare", "bare-secret"), "")
			Expect(status).To(Equal(403))
			Expect(e.Code).To(Equal(10007))
		})
	})

	when("the app scale endpoint and stats are used", func() {
		it("scales by app and type, reports one stat per instance and keeps seeded states", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			cc.AddProcess(guid, "worker", 2)
			cc.SetInstanceState(guid, "worker", 1, "CRASHED")
			tok := token("scaler", "s3cret")
			status, _, raw := do("POST", "/v3/apps/"+guid+"/processes/worker/actions/scale", tok, `{"instances":4,"memory_in_mb":256}`)
			Expect(status).To(Equal(202), string(raw))
			var p resource.Process
			Expect(json.Unmarshal(raw, &p)).To(Succeed())
			Expect(p.Type).To(Equal("worker"))
			Expect(p.Instances).To(Equal(4))
			Expect(p.MemoryInMB).To(Equal(256))
			Expect(p.Links["scale"].Href).To(Equal(cc.URL() + "/v3/processes/" + p.GUID + "/actions/scale"))

			stats, err := cfClient("scaler", "s3cret").Processes.GetStatsForApp(ctx, guid, "worker")
			Expect(err).NotTo(HaveOccurred())
			var states []string
			for _, s := range stats.Stats {
				states = append(states, s.State)
			}
			Expect(states).To(Equal([]string{"RUNNING", "CRASHED", "RUNNING", "RUNNING"}))

			sc := cc.ScaleCalls(guid)
			Expect(sc).To(HaveLen(1))
			Expect(sc[0].ProcessType).To(Equal("worker"))
			Expect(cc.Instances(guid, "web")).To(Equal(1))
			Expect(cc.Instances(guid, "worker")).To(Equal(4))
		})
	})

	when("faults are injected", func() {
		it("fails the next matching requests with the given status and code, then recovers", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			tok := token("scaler", "s3cret")
			cc.FailNext(ccdouble.Fault{Method: "GET", PathPrefix: "/v3/apps", Times: 2, Status: 503})
			cc.FailNext(ccdouble.Fault{PathPrefix: "/v3/processes", Status: 429, RetryAfter: 3 * time.Second})

			status, e, _ := do("GET", "/v3/apps/"+guid, tok, "")
			Expect(status).To(Equal(503))
			Expect(e.Code).To(Equal(10015))
			_, err := cfClient("scaler", "s3cret").Applications.Get(ctx, guid)
			Expect(cfError(err).Code).To(Equal(10015))
			status, _, _ = do("GET", "/v3/apps/"+guid, tok, "")
			Expect(status).To(Equal(200))

			req, _ := http.NewRequest("GET", cc.URL()+"/v3/processes/"+cc.ProcessGUID(guid, "web"), nil)
			req.Header.Set("Authorization", "bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(429))
			Expect(resp.Header.Get("Retry-After")).To(Equal("3"))
			Expect(cc.PendingFaults()).To(Equal(0))

			cc.FailNext(ccdouble.Fault{PathPrefix: "/v3/apps", Drop: true})
			_, err = http.Get(cc.URL() + "/v3/apps")
			Expect(err).To(HaveOccurred())
			Expect(cc.CallsTo("GET", "/v3/apps")[3].Status).To(Equal(0))
		})

		it("goes down with connection refused and comes back on the same URL", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			cf := cfClient("scaler", "s3cret")
			_, err := cf.Applications.Get(ctx, guid)
			Expect(err).NotTo(HaveOccurred())

			cc.Down()
			_, err = cf.Applications.Get(ctx, guid)
			Expect(err).To(MatchError(ContainSubstring("connection refused")))
			squatter, err := net.Listen("tcp", strings.TrimPrefix(cc.URL(), "http://"))
			if err == nil {
				squatter.Close()
			}
			Expect(err).To(MatchError(ContainSubstring("address already in use")), "the port stays reserved while down")
			cc.Up()
			_, err = cf.Applications.Get(ctx, guid)
			Expect(err).NotTo(HaveOccurred())

			cc.SetUnavailable(true)
			_, err = cf.Applications.Get(ctx, guid)
			Expect(cfError(err).Code).To(Equal(10015))
			cc.SetUnavailable(false)
			_, err = cf.Applications.Get(ctx, guid)
			Expect(err).NotTo(HaveOccurred())
		})

		it("lets an OnRequest hook hold a request and OnCall observe it", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			release := make(chan struct{})
			held := make(chan ccdouble.Call, 1)
			seen := make(chan ccdouble.Call, 10)
			cc.OnRequest(func(c ccdouble.Call) {
				if strings.HasSuffix(c.Path, "/actions/scale") {
					held <- c
					<-release
				}
			})
			cc.OnCall(func(c ccdouble.Call) { seen <- c })
			tok := token("scaler", "s3cret")
			done := make(chan int)
			req, err := http.NewRequest("POST", cc.URL()+"/v3/apps/"+guid+"/processes/web/actions/scale", strings.NewReader(`{"instances":5}`))
			Expect(err).NotTo(HaveOccurred())
			req.Header.Set("Authorization", "bearer "+tok)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					done <- 0
					return
				}
				resp.Body.Close()
				done <- resp.StatusCode
			}()
			Eventually(held).Should(Receive())
			Expect(cc.App(guid).Instances).To(Equal(1))
			close(release)
			Eventually(done).Should(Receive(Equal(202)))
			Eventually(seen).Should(Receive(HaveField("Status", 202)))
			Expect(cc.App(guid).Instances).To(Equal(5))
		})
	})

	when("many clients use it at once", func() {
		it("stays consistent", func() {
			guid := cc.AddApp(space, "orders", nil, nil)
			cf := cfClient("scaler", "s3cret")
			web := cc.ProcessGUID(guid, "web")
			errs := make(chan error, 20)
			for i := range 20 {
				go func() {
					_, err := cf.Processes.Scale(ctx, web, resource.NewProcessScale().WithInstances(i+1))
					if err == nil {
						_, err = cf.Applications.ListAll(ctx, nil)
					}
					errs <- err
				}()
			}
			for range 20 {
				Eventually(errs).Should(Receive(BeNil()))
			}
			Expect(cc.ScaleCalls(guid)).To(HaveLen(20))
			Expect(cc.App(guid).Instances).To(BeNumerically(">=", 1))
		})
	})

	when("it serves TLS", func() {
		it("works with go-cfclient trusting its certificate, and with a user login", func() {
			tlsCC := ccdouble.New(t, ccdouble.WithTLS())
			sp := tlsCC.AddSpace(tlsCC.AddOrg("acme"), "prod")
			tlsCC.AddUser("alice", "pa55", ccdouble.SpaceDeveloper(sp))
			guid := tlsCC.AddApp(sp, "orders", nil, nil)
			Expect(tlsCC.URL()).To(HavePrefix("https://127.0.0.1:"))

			cfg, err := config.New(tlsCC.URL(), config.UserPassword("alice", "pa55"), config.HttpClient(tlsCC.HTTPClient()))
			Expect(err).NotTo(HaveOccurred())
			cf, err := client.New(cfg)
			Expect(err).NotTo(HaveOccurred())
			app, err := cf.Applications.Get(ctx, guid)
			Expect(err).NotTo(HaveOccurred())
			Expect(app.Name).To(Equal("orders"))
			Expect(tlsCC.CallsTo("GET", "/v3/apps/")[0].Subject).To(Equal("alice"))

			_, err = http.Get(tlsCC.URL() + "/v3/info")
			Expect(err).To(MatchError(ContainSubstring("certificate")))
		})
	})

	when("it holds services", func() {
		it("lists instances and app bindings in the v3 shapes go-cfclient reads, only where the caller has a role", func() {
			plan := cc.AddServicePlan("hottopic", "standard", "hottopic", "nats")
			bus := cc.AddServiceInstance(space, "orders-bus", plan)
			ups := cc.AddUserProvidedService(space, "legacy-nats", "nats")
			cc.AddServiceInstance(other, "secret-bus", plan)
			app := cc.AddApp(space, "orders", nil, nil)
			binding := cc.BindService(app, bus)
			cc.BindService(app, ups)
			cf := cfClient("scaler", "s3cret")

			sis, err := cf.ServiceInstances.ListAll(ctx, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(sis).To(HaveLen(2), "the instance in the other space is not listed")
			Expect(sis[0].Name).To(Equal("orders-bus"))
			Expect(sis[0].Type).To(Equal("managed"))
			Expect(sis[0].Relationships.ServicePlan.Data.GUID).To(Equal(plan))
			Expect(sis[1].Type).To(Equal("user-provided"))
			Expect(sis[1].Tags).To(Equal([]string{"nats"}))

			bs, insts, err := cf.ServiceCredentialBindings.ListIncludeServiceInstancesAll(ctx, &client.ServiceCredentialBindingListOptions{
				ListOptions: client.NewListOptions(), AppGUIDs: client.Filter{Values: []string{app}}})
			Expect(err).NotTo(HaveOccurred())
			Expect(bs).To(HaveLen(2))
			Expect(bs[0].GUID).To(Equal(binding))
			Expect(bs[0].Type).To(Equal("app"))
			Expect(bs[0].Relationships.ServiceInstance.Data.GUID).To(Equal(bus))
			Expect(insts).To(HaveLen(2))

			// fields[] brings the plan and its offering's name along
			code, _, raw := do(http.MethodGet, "/v3/service_instances?space_guids="+space+
				"&fields[service_plan]=guid,relationships.service_offering&fields[service_plan.service_offering]=guid,name", token("scaler", "s3cret"), "")
			Expect(code).To(Equal(http.StatusOK), string(raw))
			var page struct {
				Included struct {
					Plans []struct {
						GUID          string `json:"guid"`
						Relationships struct {
							ServiceOffering struct {
								Data struct{ GUID string } `json:"data"`
							} `json:"service_offering"`
						} `json:"relationships"`
					} `json:"service_plans"`
					Offerings []map[string]any `json:"service_offerings"`
				} `json:"included"`
			}
			Expect(json.Unmarshal(raw, &page)).To(Succeed())
			Expect(page.Included.Plans).To(HaveLen(1))
			Expect(page.Included.Plans[0].GUID).To(Equal(plan))
			Expect(page.Included.Offerings).To(HaveLen(1))
			Expect(page.Included.Offerings[0]).To(HaveKeyWithValue("name", "hottopic"))
			Expect(page.Included.Plans[0].Relationships.ServiceOffering.Data.GUID).To(Equal(page.Included.Offerings[0]["guid"]))
			Expect(page.Included.Offerings[0]).NotTo(HaveKey("tags"), "only the fields asked for")

			other := cfClient("auditor", "audit-secret")
			_, err = other.ServiceCredentialBindings.Get(ctx, binding)
			Expect(err).NotTo(HaveOccurred(), "an auditor of the space reads it")
			cc.AddClient("stranger", "x")
			_, err = cfClient("stranger", "x").ServiceCredentialBindings.Get(ctx, binding)
			Expect(err).To(HaveOccurred())
		})

		it("issues tokens directly, expired ones too", func() {
			tok := cc.IssueToken("scaler", time.Hour)
			Expect(tok).To(HavePrefix("bearer "))
			code, _, raw := do(http.MethodGet, "/v3/apps", strings.TrimPrefix(tok, "bearer "), "")
			Expect(code).To(Equal(http.StatusOK), string(raw))
			code, e, _ := do(http.MethodGet, "/v3/apps", strings.TrimPrefix(cc.IssueToken("scaler", -time.Minute), "bearer "), "")
			Expect(code).To(Equal(http.StatusUnauthorized))
			Expect(e.Title).To(Equal("CF-InvalidAuthToken"))
		})
	})
}
