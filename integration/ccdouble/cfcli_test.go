package ccdouble_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	"github.com/cloudfoundry/go-cfclient/v3/config"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/proctest"
)

// TestRealCFCLI drives the real cf CLI v8 (scripts/tools.sh cf) against the
// double, then reads the login it stored with go-cfclient.
func TestRealCFCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the cf CLI")
	}
	spec.Run(t, "real cf CLI", testRealCFCLI, spec.Report(report.Terminal{}))
}

func cfBinary(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../../scripts/tools.sh", "cf").Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh cf: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func testRealCFCLI(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect  = NewWithT(t).Expect
		cfBin   string
		cc      *ccdouble.CC
		home    string
		appGUID string
	)

	it.Before(func() {
		cfBin = cfBinary(t)
		cc = ccdouble.New(t, ccdouble.WithTLS())
		org := cc.AddOrg("acme")
		space := cc.AddSpace(org, "prod")
		cc.AddSpace(cc.AddOrg("other"), "prod")
		cc.AddClient("scaler", "s3cret", ccdouble.SpaceDeveloper(space))
		cc.AddUser("alice@example.com", "pa55", ccdouble.SpaceDeveloper(space))
		appGUID = cc.AddApp(space, "orders", map[string]string{"hottopic.io/enabled": "true"}, nil)
		home = t.TempDir()
	})

	// cf runs the CLI in its own process group, killed if it outlives the test.
	cf := func(args ...string) string {
		cmd := exec.Command(cfBin, args...)
		cmd.Env = append(os.Environ(), "CF_HOME="+home, "CF_TRACE="+filepath.Join(home, "trace.log"),
			"CF_COLOR=false", "CF_PLUGIN_HOME="+home)
		out, code := proctest.Run(t, cmd, 2*time.Minute)
		if code != 0 {
			trace, _ := os.ReadFile(filepath.Join(home, "trace.log"))
			t.Fatalf("cf %s: exit %d\n%s\ntrace:\n%s", strings.Join(args, " "), code, out, trace)
		}
		return out
	}

	it("logs in with client credentials, targets and curls", func() {
		cf("api", cc.URL(), "--skip-ssl-validation")
		cf("auth", "scaler", "s3cret", "--client-credentials")
		out := cf("target", "-o", "acme", "-s", "prod")
		Expect(out).To(ContainSubstring("acme"))

		var got struct {
			GUID     string `json:"guid"`
			Name     string `json:"name"`
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		}
		Expect(json.Unmarshal([]byte(cf("curl", "/v3/apps/"+appGUID)), &got)).To(Succeed())
		Expect(got.Name).To(Equal("orders"))
		Expect(got.Metadata.Labels).To(HaveKeyWithValue("hottopic.io/enabled", "true"))

		Expect(cc.CallsTo("POST", "/uaa/oauth/token")).NotTo(BeEmpty())
		curls := cc.CallsTo("GET", "/v3/apps/"+appGUID)
		Expect(curls).To(HaveLen(1))
		Expect(curls[0].Subject).To(Equal("scaler"))
	})

	it("stores a user login that go-cfclient reads and refreshes", func() {
		// go-cfclient refreshes a stored token only when its exp is close
		// (oauth2 allows 10s), so short-lived tokens exercise the refresh grant
		cc.SetTokenLifetime(5 * time.Second)
		cf("api", cc.URL(), "--skip-ssl-validation")
		cf("auth", "alice@example.com", "pa55")
		cf("target", "-o", "acme", "-s", "prod")
		cc.ResetCalls()

		cfg, err := config.NewFromCFHomeDir(home)
		Expect(err).NotTo(HaveOccurred())
		cfc, err := client.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		app, err := cfc.Applications.Get(context.Background(), appGUID)
		Expect(err).NotTo(HaveOccurred())
		Expect(app.Name).To(Equal("orders"))

		tokenCalls := cc.CallsTo("POST", "/uaa/oauth/token")
		Expect(tokenCalls).To(HaveLen(1))
		Expect(tokenCalls[0].Form().Get("grant_type")).To(Equal("refresh_token"))
		Expect(tokenCalls[0].Subject).To(Equal("cf"))
		Expect(tokenCalls[0].Status).To(Equal(200))
		gets := cc.CallsTo("GET", "/v3/apps/"+appGUID)
		Expect(gets).To(HaveLen(1))
		Expect(gets[0].Subject).To(Equal("alice@example.com"))
	})
}
