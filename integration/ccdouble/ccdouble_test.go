package ccdouble_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

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
		Expect = NewWithT(t).Expect
		ctx    = context.Background()
		cc     *ccdouble.CC
		space  string
		other  string
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
}
