package cli_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/cli"
	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
)

func TestCFCommands(t *testing.T) {
	spec.Run(t, "cf commands", testCFCommands, spec.Report(report.Terminal{}))
}

// cfWorld is a CC double with org acme / space dev, a logged-in cf CLI
// config in a temporary CF_HOME, and an empty working directory (so no
// `hottopic dev` runtime is found). The space has the user-provided NATS
// service hottopic-nats (tag hottopic) apps are bound to before map-event.
type cfWorld struct {
	t         *testing.T
	cc        *ccdouble.CC
	orgGUID   string
	spaceGUID string
	home      string
	bus       string
}

const (
	devUser = "dev@example.com"
	devPass = "secret-pass"
)

func newCFWorld(t *testing.T) *cfWorld {
	cc := ccdouble.New(t)
	w := &cfWorld{t: t, cc: cc, home: t.TempDir()}
	w.orgGUID = cc.AddOrg("acme")
	w.spaceGUID = cc.AddSpace(w.orgGUID, "dev")
	w.bus = cc.AddUserProvidedService(w.spaceGUID, "hottopic-nats", "hottopic")
	cc.AddUser(devUser, devPass, ccdouble.SpaceDeveloper(w.spaceGUID))
	t.Setenv("CF_HOME", w.home)
	t.Setenv(cli.EnvScalerURL, "")
	t.Chdir(t.TempDir())
	w.login(devUser, devPass)
	return w
}

// login does what `cf login` does (password grant as client "cf") and
// writes the config.json the cf CLI would.
func (w *cfWorld) login(user, pass string) {
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}}
	req, _ := http.NewRequest(http.MethodPost, w.cc.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cf", "")
	w.writeConfig(w.tokenRequest(req), "password", "cf", "")
}

// loginClient does what `cf auth ID SECRET --client-credentials` does.
func (w *cfWorld) loginClient(id, secret string) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
	req, _ := http.NewRequest(http.MethodPost, w.cc.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w.writeConfig(w.tokenRequest(req), "client_credentials", id, secret)
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func (w *cfWorld) tokenRequest(req *http.Request) tokens {
	resp, err := http.DefaultClient.Do(req)
	NewWithT(w.t).Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	NewWithT(w.t).Expect(resp.StatusCode).To(Equal(http.StatusOK))
	var tok tokens
	NewWithT(w.t).Expect(json.NewDecoder(resp.Body).Decode(&tok)).To(Succeed())
	return tok
}

func (w *cfWorld) writeConfig(tok tokens, grant, client, secret string) {
	cfg := map[string]any{
		"ConfigVersion":         3,
		"Target":                w.cc.URL(),
		"APIVersion":            ccdouble.DefaultAPIVersion,
		"AuthorizationEndpoint": w.cc.UAAURL(),
		"UaaEndpoint":           w.cc.UAAURL(),
		"AccessToken":           "bearer " + tok.AccessToken,
		"RefreshToken":          tok.RefreshToken,
		"UAAGrantType":          grant,
		"UAAOAuthClient":        client,
		"UAAOAuthClientSecret":  secret,
		"SSLDisabled":           false,
		"OrganizationFields":    map[string]any{"GUID": w.orgGUID, "Name": "acme"},
		"SpaceFields":           map[string]any{"GUID": w.spaceGUID, "Name": "dev", "AllowSSH": true},
		"ColorEnabled":          "false",
		"PluginRepos":           []any{},
	}
	w.saveConfig(cfg)
}

func (w *cfWorld) configPath() string { return filepath.Join(w.home, ".cf", "config.json") }

func (w *cfWorld) config() map[string]any {
	b, err := os.ReadFile(w.configPath())
	NewWithT(w.t).Expect(err).NotTo(HaveOccurred())
	var cfg map[string]any
	NewWithT(w.t).Expect(json.Unmarshal(b, &cfg)).To(Succeed())
	return cfg
}

func (w *cfWorld) saveConfig(cfg map[string]any) {
	b, err := json.MarshalIndent(cfg, "", "  ")
	NewWithT(w.t).Expect(err).NotTo(HaveOccurred())
	NewWithT(w.t).Expect(os.MkdirAll(filepath.Dir(w.configPath()), 0o700)).To(Succeed())
	NewWithT(w.t).Expect(os.WriteFile(w.configPath(), b, 0o600)).To(Succeed())
}

// patches returns the bodies of the PATCH /v3/apps/GUID calls so far.
func (w *cfWorld) patches(appGUID string) []string {
	var out []string
	for _, c := range w.cc.CallsTo(http.MethodPatch, "/v3/apps/"+appGUID) {
		out = append(out, string(c.Body))
	}
	return out
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs the standalone CLI as cli.Main does, capturing its output.
func run(args ...string) result {
	root := cli.NewRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	r := result{}
	if err := root.Execute(); err != nil {
		errb.WriteString("Error: " + err.Error() + "\n")
		r.code = 1
	}
	r.stdout, r.stderr = out.String(), errb.String()
	return r
}

// failsWith asserts a one-line error with exit code 1.
func failsWith(t *testing.T, r result, substr string) {
	t.Helper()
	Expect := NewWithT(t).Expect
	Expect(r.code).To(Equal(1), "stdout: %s", r.stdout)
	Expect(strings.Count(strings.TrimSuffix(r.stderr, "\n"), "\n")).To(Equal(0), "error must be one line: %q", r.stderr)
	Expect(r.stderr).To(ContainSubstring(substr))
}

func testCFCommands(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect = NewWithT(t).Expect
		w      *cfWorld
		orders string
	)

	it.Before(func() {
		w = newCFWorld(t)
		orders = w.cc.AddApp(w.spaceGUID, "orders", nil, nil)
		w.cc.BindService(orders, w.bus)
	})

	when("the app has no hottopic service binding", func() {
		it("refuses it in one line naming the space's buses, and changes nothing", func() {
			lonely := w.cc.AddApp(w.spaceGUID, "lonely", nil, nil)
			failsWith(t, run("map-event", "lonely", "orders.created"), "Error: "+mapping.NoBinding("lonely", []string{"hottopic-nats"}).Error()+"\n")

			// Bound to another kind of service, with a broker's bus in the space.
			db := w.cc.AddServiceInstance(w.spaceGUID, "orders-db", w.cc.AddServicePlan("p-mysql", "small", "mysql"))
			w.cc.BindService(lonely, db)
			w.cc.AddServiceInstance(w.spaceGUID, "orders-bus", w.cc.AddServicePlan("hottopic", "standard", "hottopic", "nats"))
			w.cc.AddUserProvidedService(w.spaceGUID, "logs", "syslog")
			r := run("map-event", "lonely", "orders.created", "--max", "3")
			failsWith(t, r, "Error: app lonely has no hottopic service binding: run cf bind-service lonely BUS, BUS one of hottopic-nats, orders-bus\n")
			Expect(w.patches(lonely)).To(BeEmpty())
			Expect(w.cc.App(lonely).Annotations).To(BeEmpty())
			Expect(w.cc.App(lonely).Labels).To(BeEmpty())
		})

		it("accepts an app bound to a broker's bus, or to a user-provided service tagged nats", func() {
			enrich := w.cc.AddApp(w.spaceGUID, "enrich", nil, nil)
			w.cc.BindService(enrich, w.cc.AddServiceInstance(w.spaceGUID, "orders-bus", w.cc.AddServicePlan("hottopic", "standard", "hottopic", "nats")))
			r := run("map-event", "enrich", "orders.created")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(w.patches(enrich)).To(HaveLen(1))

			legacy := w.cc.AddApp(w.spaceGUID, "legacy", nil, nil)
			w.cc.BindService(legacy, w.cc.AddUserProvidedService(w.spaceGUID, "old-nats", "NATS"))
			r = run("map-event", "legacy", "orders.created")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(w.cc.App(legacy).Labels).To(HaveKeyWithValue(mapping.LabelMapped, "true"))
			for _, c := range w.cc.CallsTo(http.MethodGet, "/v3/service_") {
				Expect(c.Status).To(Equal(http.StatusOK), c.Path+"?"+c.RawQuery)
			}
		})
	})

	when("mapping and unmapping", func() {
		it("sends exactly the keys that change, in one PATCH each time", func() {
			r := run("map-event", "orders", "orders.created")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("Mapping topic orders.created to app orders in org acme / space dev as " + devUser + "..."))
			Expect(r.stdout).To(HaveSuffix("OK\n"))
			Expect(w.patches(orders)).To(HaveLen(1))
			Expect(w.patches(orders)[0]).To(MatchJSON(`{"metadata":{
				"labels":{"hottopic.io/mapped":"true"},
				"annotations":{"hottopic.io/topics":"orders.created"}}}`))

			// a second topic with settings: the label is already there
			r = run("map-event", "orders", "orders.updated", "--max", "20", "--path", "/events", "--min", "1")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(w.patches(orders)).To(HaveLen(2))
			Expect(w.patches(orders)[1]).To(MatchJSON(`{"metadata":{"annotations":{
				"hottopic.io/topics":"orders.created,orders.updated",
				"hottopic.io/max-instances":"20",
				"hottopic.io/min-instances":"1",
				"hottopic.io/path":"/events"}}}`))

			// the same topic again: not an error, and nothing to send
			r = run("map-event", "orders", "orders.created")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("Topic orders.created is already mapped to app orders."))
			Expect(w.patches(orders)).To(HaveLen(2))

			// the same topic with a changed setting: only that setting
			r = run("map-event", "orders", "orders.created", "--max", "20", "--lag-per-instance", "5")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("already mapped"))
			Expect(w.patches(orders)[2]).To(MatchJSON(`{"metadata":{"annotations":{"hottopic.io/lag-per-instance":"5"}}}`))

			// unmapping one of two topics
			r = run("unmap-event", "orders", "orders.created")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("Unmapping topic orders.created from app orders in org acme / space dev"))
			Expect(w.patches(orders)[3]).To(MatchJSON(`{"metadata":{"annotations":{"hottopic.io/topics":"orders.updated"}}}`))

			// unmapping a topic that is not mapped: said, nothing sent
			r = run("unmap-event", "orders", "orders.created")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("Topic orders.created is not mapped to app orders."))
			Expect(w.patches(orders)).To(HaveLen(4))

			// unmapping the last topic removes the label and every setting
			r = run("unmap-event", "orders", "orders.updated")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("no event mappings left"))
			Expect(w.patches(orders)[4]).To(MatchJSON(`{"metadata":{
				"labels":{"hottopic.io/mapped":null},
				"annotations":{
					"hottopic.io/topics":null,
					"hottopic.io/min-instances":null,
					"hottopic.io/max-instances":null,
					"hottopic.io/lag-per-instance":null,
					"hottopic.io/idle-seconds":null,
					"hottopic.io/concurrency":null,
					"hottopic.io/path":null,
					"hottopic.io/timeout-seconds":null,
					"hottopic.io/max-deliver":null,
					"hottopic.io/output-topic":null,
					"hottopic.io/batch-size":null,"hottopic.io/batch-wait-ms":null}}}`))
			app := w.cc.App(orders)
			Expect(app.Labels).To(BeEmpty())
			Expect(app.Annotations).To(BeEmpty())
		})

		it("keeps the app's other metadata and turns an output topic off with an empty value", func() {
			w.cc.SetLabels(orders, map[string]string{"team": "payments"})
			w.cc.SetAnnotations(orders, map[string]string{"owner": "ops", mapping.AnnTopics: "a", mapping.AnnOutputTopic: "b"})
			r := run("map-event", "orders", "c", "--output-topic", "")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(w.patches(orders)[0]).To(MatchJSON(`{"metadata":{
				"labels":{"hottopic.io/mapped":"true"},
				"annotations":{"hottopic.io/topics":"a,c","hottopic.io/output-topic":null}}}`))
			app := w.cc.App(orders)
			Expect(app.Labels).To(Equal(map[string]string{"team": "payments", mapping.LabelMapped: "true"}))
			Expect(app.Annotations).To(Equal(map[string]string{"owner": "ops", mapping.AnnTopics: "a,c"}))
		})
	})

	when("the app has a hottopic.io/* annotation Hot Topic does not know", func() {
		it("maps the topic and warns that the annotation is ignored, naming the likely one", func() {
			w.cc.SetAnnotations(orders, map[string]string{mapping.AnnTopics: "a", "hottopic.io/max-instance": "3"})
			r := run("map-event", "orders", "c")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stderr).To(Equal("Warning: app orders: unknown annotation hottopic.io/max-instance is ignored (did you mean hottopic.io/max-instances?)\n"))
			Expect(r.stdout).To(ContainSubstring("OK"))
		})
	})

	when("the app already has a bad setting annotation", func() {
		it("names the flag that replaces it, and the flag does", func() {
			w.cc.SetLabels(orders, map[string]string{mapping.LabelMapped: "true"})
			w.cc.SetAnnotations(orders, map[string]string{mapping.AnnTopics: "a", mapping.AnnMin: "one"})
			r := run("map-event", "orders", "b")
			failsWith(t, r, `annotation hottopic.io/min-instances must be a whole number, got "one"; give --min to replace it`)
			Expect(w.patches(orders)).To(BeEmpty())

			r = run("map-event", "orders", "b", "--min", "1")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(w.cc.App(orders).Annotations).To(Equal(map[string]string{mapping.AnnTopics: "a,b", mapping.AnnMin: "1"}))
		})
	})

	when("listing", func() {
		it.Before(func() {
			Expect(run("map-event", "orders", "orders.created", "--max", "5").code).To(Equal(0))
			Expect(run("map-event", "orders", "orders_v2.paid").code).To(Equal(0))
			w.cc.AddApp(w.spaceGUID, "web", nil, nil)
			w.cc.AddApp(w.spaceGUID, "broken", map[string]string{mapping.LabelMapped: "true"},
				map[string]string{mapping.AnnTopics: "x", mapping.AnnMax: "lots"})
			otherSpace := w.cc.AddSpace(w.orgGUID, "prod")
			w.cc.Grant(devUser, ccdouble.SpaceDeveloper(otherSpace))
			w.cc.AddApp(otherSpace, "elsewhere", map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "y"})
			w.cc.ResetCalls()
		})

		it("lists the space's mapped apps by label selector, with streams and invalid mappings", func() {
			r := run("events")
			Expect(r.code).To(Equal(0), r.stderr)
			lists := w.cc.CallsTo(http.MethodGet, "/v3/apps")
			Expect(lists).To(HaveLen(1))
			Expect(lists[0].Query().Get("label_selector")).To(Equal("hottopic.io/mapped=true"))
			Expect(lists[0].Query().Get("space_guids")).To(Equal(w.spaceGUID))

			lines := strings.Split(r.stdout, "\n")
			Expect(lines[0]).To(Equal("Getting event mappings in org acme / space dev as " + devUser + "..."))
			Expect(lines[2]).To(MatchRegexp(`^name\s+topics\s+streams\s+min/max\s+lag-per-instance\s+status$`))
			Expect(r.stdout).To(MatchRegexp(`(?m)^broken\s+x\s+HT_x\s+-\s+-\s+invalid: annotation hottopic.io/max-instances must be a whole number, got "lots"$`))
			Expect(r.stdout).To(MatchRegexp(`(?m)^orders\s+orders.created,orders_v2.paid\s+HT_orders_created,HT_orders_v2_paid__[0-9a-f]{12}\s+0/5\s+10\s+ok$`))
			Expect(r.stdout).NotTo(ContainSubstring("web"))
			Expect(r.stdout).NotTo(ContainSubstring("elsewhere"))
			Expect(r.stdout).To(ContainSubstring("Live lag and instances: pass --scaler URL or set HOTTOPIC_SCALER_URL."))
			// columns line up like cf's tables
			Expect(strings.Index(lines[3], "x ")).To(Equal(strings.Index(lines[2], "topics")))
		})

		it("shows one app, and prints JSON for scripts", func() {
			r := run("events", "orders", "--json")
			Expect(r.code).To(Equal(0), r.stderr)
			var doc struct {
				Source   string `json:"source"`
				Space    string `json:"space"`
				Live     bool   `json:"live"`
				Mappings []struct {
					AppGUID  string            `json:"app_guid"`
					AppName  string            `json:"app_name"`
					Topics   []string          `json:"topics"`
					Streams  map[string]string `json:"streams"`
					Valid    bool              `json:"valid"`
					Settings mapping.Settings  `json:"settings"`
				} `json:"mappings"`
			}
			Expect(json.Unmarshal([]byte(r.stdout), &doc)).To(Succeed(), r.stdout)
			Expect(doc.Source).To(Equal("cf"))
			Expect(doc.Space).To(Equal("dev"))
			Expect(doc.Live).To(BeFalse())
			Expect(doc.Mappings).To(HaveLen(1))
			Expect(doc.Mappings[0].AppGUID).To(Equal(orders))
			Expect(doc.Mappings[0].Topics).To(Equal([]string{"orders.created", "orders_v2.paid"}))
			Expect(doc.Mappings[0].Streams).To(HaveKeyWithValue("orders.created", "HT_orders_created"))
			Expect(doc.Mappings[0].Valid).To(BeTrue())
			Expect(doc.Mappings[0].Settings.MaxInstances).To(Equal(5))
			// Without the scaler nobody knows the instances: null, not 0.
			Expect(r.stdout).To(ContainSubstring(`"current_instances": null`))
			Expect(r.stdout).To(ContainSubstring(`"desired_instances": null`))

			r = run("events", "web")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("App web has no event mappings."))

			failsWith(t, run("events", "nope"), "App 'nope' not found in org acme / space dev")
		})

		it("still prints the table when the scaler is unreachable, says why and exits 1", func() {
			scaler := "http://" + closedAddr(t)
			r := run("events", "--scaler", scaler)
			failsWith(t, r, "scaler at "+scaler+" unreachable")
			Expect(r.stderr).To(ContainSubstring("connection refused"))
			Expect(r.stdout).To(MatchRegexp(`(?m)^orders\s+orders.created`))
			Expect(r.stdout).To(MatchRegexp(`(?m)^name\s+topics\s+streams\s+min/max\s+lag-per-instance\s+status$`))

			t.Setenv(cli.EnvScalerURL, scaler)
			r = run("events", "--json")
			Expect(r.code).To(Equal(1))
			Expect(r.stdout).To(ContainSubstring(`"live_error": "scaler at http://`))

			failsWith(t, run("events", "--scaler", "127.0.0.1:9"), `bad scaler URL "127.0.0.1:9"`)
		})
	})

	when("the input is bad", func() {
		it("refuses it before sending anything", func() {
			w.cc.SetAnnotations(orders, map[string]string{mapping.AnnTopics: "a", mapping.AnnMax: "3"})
			w.cc.SetLabels(orders, map[string]string{mapping.LabelMapped: "true"})
			w.cc.ResetCalls()
			for _, c := range []struct {
				args []string
				msg  string
			}{
				{[]string{"orders", "orders.*"}, `invalid topic "orders.*": wildcards`},
				{[]string{"orders", "hottopic.x"}, `invalid topic "hottopic.x": topics starting with 'hottopic.' are reserved`},
				{[]string{"orders", "a..b"}, `tokens between '.' must not be empty`},
				{[]string{"orders", "a,b"}, `invalid topic "a,b"`},
				{[]string{"orders", "t", "--min", "-1"}, "bad --min: min-instances must be 0 or more, got -1"},
				{[]string{"orders", "t", "--max", "0"}, "bad --max: max-instances must be between 1 and 1000, got 0"},
				{[]string{"orders", "t", "--max", "2000000000"}, "bad --max: max-instances must be between 1 and 1000, got 2000000000"},
				{[]string{"orders", "t", "--idle-seconds", "-5"}, "bad --idle-seconds: idle-seconds must be 0 or more, got -5"},
				{[]string{"orders", "t", "--concurrency", "0"}, "bad --concurrency"},
				{[]string{"orders", "t", "--path", "events"}, "bad --path: path must start with '/'"},
				{[]string{"orders", "t", "--output-topic", "a.>"}, "bad --output-topic: output-topic: invalid topic"},
				{[]string{"orders", "t", "--batch-size", "1001"}, "bad --batch-size: batch-size must be between 1 and 1000, got 1001"},
				{[]string{"orders", "t", "--min", "5", "--max", "2"}, "--min 5 is greater than --max 2"},
				{[]string{"orders", "t", "--max", "ten"}, `invalid argument "ten" for "--max"`},
				{[]string{"orders"}, "map-event needs APP and TOPIC"},
			} {
				failsWith(t, run(append([]string{"map-event"}, c.args...)...), c.msg)
			}
			Expect(w.cc.Calls()).To(BeEmpty(), "nothing may reach CC for input that is bad on its own")

			// against the values already on the app
			failsWith(t, run("map-event", "orders", "b", "--min", "5"), "bad --min: 5 is greater than max-instances 3 of app 'orders'; set --max as well")
			Expect(run("map-event", "orders", "b", "--min", "11", "--max", "12").code).To(Equal(0), "both bounds given")
			w.cc.SetAnnotations(orders, map[string]string{mapping.AnnTopics: "a", mapping.AnnMin: "4"})
			failsWith(t, run("map-event", "orders", "b", "--max", "2"), "bad --max: 2 is less than min-instances 4 of app 'orders'; set --min as well")
			w.cc.SetAnnotations(orders, map[string]string{mapping.AnnTopics: "a"})
			failsWith(t, run("map-event", "orders", "b", "--min", "11"), "bad --min: 11 is greater than max-instances 10 (the default) of app 'orders'; set --max as well")
			w.cc.SetAnnotations(orders, map[string]string{mapping.AnnTopics: "a", mapping.AnnTimeout: "soon"})
			failsWith(t, run("map-event", "orders", "b"), `app 'orders': annotation hottopic.io/timeout-seconds must be a whole number, got "soon"`)
			failsWith(t, run("unmap-event", "orders", "no*pe"), `invalid topic "no*pe"`)
			Expect(w.patches(orders)).To(HaveLen(1), "only the valid --min 11 --max 12 was sent")
		})
	})

	when("Cloud Foundry says no", func() {
		it("names the unknown app", func() {
			failsWith(t, run("map-event", "ordrs", "t"), "App 'ordrs' not found in org acme / space dev")
			failsWith(t, run("unmap-event", "ordrs", "t"), "App 'ordrs' not found in org acme / space dev")
		})

		it("reports a 403 and changes nothing", func() {
			auditor := "auditor@example.com"
			w.cc.AddUser(auditor, "pw", ccdouble.SpaceAuditor(w.spaceGUID))
			w.login(auditor, "pw")
			failsWith(t, run("map-event", "orders", "t"), "not authorized to change app 'orders': CF-NotAuthorized")
			Expect(w.cc.App(orders).Labels).To(BeEmpty())
			Expect(w.cc.App(orders).Annotations).To(BeEmpty())
		})

		it("says when Cloud Controller is unreachable", func() {
			w.cc.Down()
			failsWith(t, run("map-event", "orders", "t"), "cannot reach Cloud Controller at "+w.cc.URL())
			failsWith(t, run("events"), "cannot reach Cloud Controller at "+w.cc.URL())
		})

		it("reports other CC errors in one line", func() {
			w.cc.FailNext(ccdouble.Fault{Method: http.MethodPatch, PathPrefix: "/v3/apps", Status: http.StatusServiceUnavailable})
			failsWith(t, run("map-event", "orders", "t"), "cannot change app 'orders': CF-ServiceUnavailable (10015)")
		})
	})

	when("the cf CLI login is missing or incomplete", func() {
		it("says what to do, never asks for a password", func() {
			cfg := w.config()
			delete(cfg, "SpaceFields")
			w.saveConfig(cfg)
			failsWith(t, run("map-event", "orders", "t"), "no space targeted: use 'cf target -o ORG -s SPACE' first")

			cfg["AccessToken"], cfg["RefreshToken"] = "", ""
			w.saveConfig(cfg)
			failsWith(t, run("events"), "not logged in: use 'cf login' first")

			cfg["Target"] = ""
			w.saveConfig(cfg)
			failsWith(t, run("events"), "no API endpoint set")

			Expect(os.Remove(w.configPath())).To(Succeed())
			failsWith(t, run("unmap-event", "orders", "t"), "not logged in: no cf CLI login in "+w.configPath())
			Expect(w.patches(orders)).To(BeEmpty())
		})
	})

	when("the token expires", func() {
		it("refreshes a token about to expire before using it, and saves it for cf", func() {
			w.cc.SetTokenLifetime(30 * time.Second)
			w.login(devUser, devPass)
			w.cc.SetTokenLifetime(time.Hour)
			before := w.config()
			w.cc.ResetCalls()

			r := run("map-event", "orders", "t")
			Expect(r.code).To(Equal(0), r.stderr)
			refreshes := w.cc.CallsTo(http.MethodPost, "/uaa/oauth/token")
			Expect(refreshes).To(HaveLen(1))
			form, _ := url.ParseQuery(string(refreshes[0].Body))
			Expect(form.Get("grant_type")).To(Equal("refresh_token"))
			req := http.Request{Header: refreshes[0].Header}
			client, secret, basic := req.BasicAuth()
			Expect([]any{client, secret, basic}).To(Equal([]any{"cf", "", true}), "as the cf CLI: client cf, empty secret")
			Expect(w.cc.CallsTo(http.MethodPatch, "/v3/apps")[0].Status).To(Equal(http.StatusOK))

			after := w.config()
			Expect(after["AccessToken"]).NotTo(Equal(before["AccessToken"]))
			Expect(after["AccessToken"]).To(HavePrefix("bearer "))
			Expect(after["RefreshToken"]).NotTo(BeEmpty())
			for _, k := range []string{"Target", "SpaceFields", "OrganizationFields", "ColorEnabled", "ConfigVersion", "PluginRepos"} {
				Expect(after[k]).To(Equal(before[k]), k)
			}
			info, err := os.Stat(w.configPath())
			Expect(err).NotTo(HaveOccurred())
			Expect(info.Mode().Perm()).To(Equal(os.FileMode(0o600)))
		})

		it("refreshes once after a 401 and retries", func() {
			w.cc.ExpireTokens()
			w.cc.ResetCalls()
			r := run("map-event", "orders", "t")
			Expect(r.code).To(Equal(0), r.stderr)
			var seq []string
			for _, c := range w.cc.Calls() {
				seq = append(seq, c.Method+" "+c.Path+" "+http.StatusText(c.Status))
			}
			Expect(seq).To(Equal([]string{
				"GET /v3/apps Unauthorized",
				"POST /uaa/oauth/token OK",
				"GET /v3/apps OK",
				"GET /v3/service_instances OK",
				"GET /v3/service_credential_bindings OK",
				"PATCH /v3/apps/" + orders + " OK",
			}))
		})

		it("says 'not logged in' when the refresh token is gone too", func() {
			w.cc.ExpireTokens()
			w.cc.ExpireRefreshTokens()
			r := run("map-event", "orders", "t")
			failsWith(t, r, "not logged in: the cf CLI token could not be refreshed (invalid_token); use 'cf login'")
			Expect(r.stderr).NotTo(ContainSubstring(w.config()["RefreshToken"].(string)))
			Expect(w.patches(orders)).To(BeEmpty())
		})

		it("gets a new client-credentials token after cf auth --client-credentials", func() {
			w.cc.AddClient("deployer", "client-secret", ccdouble.SpaceDeveloper(w.spaceGUID))
			w.loginClient("deployer", "client-secret")
			w.cc.ExpireTokens()
			w.cc.ResetCalls()
			r := run("map-event", "orders", "t")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(ContainSubstring("as deployer..."))
			tok := w.cc.CallsTo(http.MethodPost, "/uaa/oauth/token")
			Expect(tok).To(HaveLen(1))
			form, _ := url.ParseQuery(string(tok[0].Body))
			Expect(form.Get("grant_type")).To(Equal("client_credentials"))
			Expect(form.Get("client_id")).To(Equal("deployer"))
			Expect(w.patches(orders)).To(HaveLen(1))
		})

		it("asks for cf auth again when cf kept no client secret (cf v8)", func() {
			w.cc.AddClient("deployer", "client-secret", ccdouble.SpaceDeveloper(w.spaceGUID))
			w.loginClient("deployer", "client-secret")
			cfg := w.config()
			cfg["UAAOAuthClientSecret"] = ""
			w.saveConfig(cfg)
			w.cc.ExpireTokens()
			failsWith(t, run("map-event", "orders", "t"), "not logged in: the client-credentials token expired; run 'cf auth CLIENT_ID CLIENT_SECRET --client-credentials' again")
			Expect(w.patches(orders)).To(BeEmpty())
		})
	})
}

// closedAddr is a 127.0.0.1 address nobody listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
