// Package tenancy_test runs the multi-tenant system end to end: a real
// nats-server configured by `hottopic-broker init --tls` (so every client
// below speaks TLS: the server closes one in clear), the broker, one
// hottopic-scaler in broker mode against the Cloud Controller double, and
// real sidecars bound through the broker, as Cloud Foundry would run them.
package tenancy_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/api"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

const orders = "orders.created"

// foundation is the system under test, all on loopback.
type foundation struct {
	t         *testing.T
	dir       string
	brokerURL string
	brokerEnv map[string]string
	scalerEnv map[string]string
	cc        *ccdouble.CC
	org       string
	space     string
}

func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	env, err := broker.ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func environ(env map[string]string, extra ...string) []string {
	out := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return append(out, extra...)
}

func start(t *testing.T) *foundation {
	t.Helper()
	f := &foundation{t: t, dir: t.TempDir(), cc: ccdouble.New(t)}
	natsPort := proctest.FreePort(t)
	out, code := proctest.Run(t, exec.Command(proctest.Build(t, "./cmd/hottopic-broker"), "init", "--tls", "--port", strconv.Itoa(natsPort), f.dir), time.Minute)
	if code != 0 {
		t.Fatalf("hottopic-broker init: %s", out)
	}
	bin, err := exec.Command("../../scripts/tools.sh", "nats-server").Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh nats-server: %v", err)
	}
	ns := proctest.Start(t, exec.Command(strings.TrimSpace(string(bin)), "-c", filepath.Join(f.dir, broker.ServerConfFile), "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort)))
	NewWithT(t).Eventually(ns.Out, time.Minute).Should(gbytes.Say("Server is ready"))

	f.brokerEnv = envFile(t, filepath.Join(f.dir, broker.BrokerEnvFile))
	f.scalerEnv = envFile(t, filepath.Join(f.dir, broker.ScalerEnvFile))
	f.org = f.cc.AddOrg("acme")
	f.space = f.cc.AddSpace(f.org, "prod")
	f.cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(f.space))
	return f
}

// startBroker runs hottopic-broker with broker.env; it makes the state's
// buckets when it starts.
func (f *foundation) startBroker() {
	port := proctest.FreePort(f.t)
	cmd := exec.Command(proctest.Build(f.t, "./cmd/hottopic-broker"))
	cmd.Env = environ(f.brokerEnv, "PORT="+strconv.Itoa(port))
	b := proctest.Start(f.t, cmd)
	NewWithT(f.t).Eventually(b.Out, time.Minute).Should(gbytes.Say("hottopic-broker ready"))
	f.brokerURL = fmt.Sprintf("http://127.0.0.1:%d", port)
}

// osb sends one OSB request as Cloud Controller would; it fails the test
// unless the broker answers want.
func (f *foundation) osb(want int, method, path string, body any) map[string]any {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		r = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, f.brokerURL+path, r)
	req.Header.Set("X-Broker-API-Version", "2.17")
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(f.brokerEnv[broker.EnvUsername], f.brokerEnv[broker.EnvPassword])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return out
}

const ids = "?service_id=" + broker.ServiceID + "&plan_id=" + broker.PlanID

// createService is cf create-service hottopic standard NAME: the instance
// ID is NAME's "-id" twin.
func (f *foundation) createService(name string) {
	f.osb(http.StatusCreated, "PUT", "/v2/service_instances/"+name+"-id", map[string]any{
		"service_id": broker.ServiceID, "plan_id": broker.PlanID,
		"organization_guid": f.org, "space_guid": f.space,
		"context":    map[string]any{"platform": "cloudfoundry", "instance_name": name, "space_guid": f.space, "organization_guid": f.org},
		"parameters": map[string]any{"topics": []string{orders}},
	})
}

func (f *foundation) deleteService(name string) {
	f.osb(http.StatusOK, "DELETE", "/v2/service_instances/"+name+"-id"+ids, nil)
}

// bind is cf bind-service (appGUID) or cf create-service-key (""); it
// returns the credentials.
func (f *foundation) bind(service, binding, appGUID string) map[string]any {
	req := map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID}
	if appGUID != "" {
		req["bind_resource"] = map[string]any{"app_guid": appGUID}
	}
	return f.osb(http.StatusCreated, "PUT", "/v2/service_instances/"+service+"-id/service_bindings/"+binding, req)["credentials"].(map[string]any)
}

func (f *foundation) unbind(service, binding string) {
	f.osb(http.StatusOK, "DELETE", "/v2/service_instances/"+service+"-id/service_bindings/"+binding+ids, nil)
}

// mappedApp is an app mapped to topic orders.created with cf map-event, at
// 0 instances.
func (f *foundation) mappedApp(name string) string {
	guid := f.cc.AddApp(f.space, name, map[string]string{mapping.LabelMapped: mapping.LabelMappedTrue}, map[string]string{mapping.AnnTopics: orders})
	f.cc.SetInstances(guid, "web", 0)
	return guid
}

// startScaler runs hottopic-scaler with scaler.env, as `cf push` of the
// scaler with the broker would.
func (f *foundation) startScaler(override ...string) (*proctest.Proc, string) {
	port := proctest.FreePort(f.t)
	cmd := exec.Command(proctest.Build(f.t, "./cmd/hottopic-scaler"))
	cmd.Env = environ(f.scalerEnv, append(override, "PORT="+strconv.Itoa(port), "HOME="+f.t.TempDir(),
		"CF_API="+f.cc.URL(), "CF_CLIENT_ID=hottopic-scaler", "CF_CLIENT_SECRET=s3cret",
		"HOTTOPIC_POLL_INTERVAL=100ms", "HOTTOPIC_DISCOVERY_INTERVAL=200ms",
		"HOTTOPIC_METRICS_USERNAME=prometheus", "HOTTOPIC_METRICS_PASSWORD=scrape-s3cret")...)
	return proctest.Start(f.t, cmd), fmt.Sprintf("http://127.0.0.1:%d", port)
}

// app is an app's HTTP server: the events its sidecar POSTs, in order.
type app struct {
	mu     sync.Mutex
	events []string
	port   int
}

func (f *foundation) app() *app {
	a := &app{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.events = append(a.events, string(body))
		a.mu.Unlock()
	}))
	f.t.Cleanup(srv.Close)
	a.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return a
}

func (a *app) received() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string{}, a.events...)
}

// startSidecar runs hottopic-sidecar beside a as Cloud Foundry would with
// the binding's credentials in VCAP_SERVICES.
func (f *foundation) startSidecar(service string, creds map[string]any, appGUID, appName string, a *app) *proctest.Proc {
	services, _ := json.Marshal(map[string]any{"hottopic": []any{map[string]any{
		"name": service, "label": "hottopic", "tags": []string{"hottopic", "nats", "events"}, "credentials": creds,
	}}})
	application, _ := json.Marshal(map[string]any{"application_id": appGUID, "application_name": appName, "instance_index": 0})
	cmd := exec.Command(proctest.Build(f.t, "./cmd/hottopic-sidecar"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"PORT=" + strconv.Itoa(a.port),
		"HOTTOPIC_LISTEN=127.0.0.1:" + strconv.Itoa(proctest.FreePort(f.t)),
		"VCAP_SERVICES=" + string(services),
		"VCAP_APPLICATION=" + string(application),
	}
	return proctest.Start(f.t, cmd)
}

// publish publishes body to orders.created with a service key's
// credentials, and waits for JetStream's acknowledgement.
func publish(t *testing.T, key map[string]any, body string) {
	t.Helper()
	// The options the sidecar's cfenv makes of a binding (creds,
	// inbox_prefix, ca_cert: the foundation runs TLS).
	svc := cfenv.Service{Name: "key", Credentials: map[string]json.RawMessage{}}
	for k, v := range key {
		svc.Credentials[k], _ = json.Marshal(v)
	}
	cfg, err := cfenv.NATSFromService(svc)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	nc, err := cfenv.Connect(cctx, cfg, "tenancy-test/publish", nats.NoReconnect())
	if err != nil {
		t.Fatalf("connect with the service key: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, orders, []byte(body)); err != nil {
		t.Fatalf("publish %q: %v", body, err)
	}
}

// natsCLI runs the NATS CLI (scripts/tools.sh nats) with a binding's
// credentials: its servers, .creds, CA and inbox prefix.
func natsCLI(t *testing.T, key map[string]any, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.Command("../../scripts/tools.sh", "nats").Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh nats: %v", err)
	}
	dir := t.TempDir()
	creds, ca := filepath.Join(dir, "key.creds"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(creds, []byte(key["creds"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, []byte(key["ca_cert"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(strings.TrimSpace(string(bin)), append([]string{"--server", key["urls"].(string),
		"--creds", creds, "--tlsca", ca, "--inbox-prefix", key["inbox_prefix"].(string)}, args...)...)
	// A home of its own: no saved CLI context applies.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// call GETs url with an Authorization header (none when auth is "").
func call(url, auth string) ([]byte, error) { return send("GET", url, auth, "") }

// post POSTs a JSON body to url with an Authorization header.
func post(url, auth, body string) ([]byte, error) { return send("POST", url, auth, body) }

// send makes one request; an answer other than 200 is an error.
func send(method, url, auth, body string) ([]byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, raw)
	}
	return raw, err
}

// getJSON decodes the answer of GET url.
func getJSON(url, auth string, v any) error {
	raw, err := call(url, auth)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// byApp is GET /v1/mappings with a Cloud Foundry token, by app name; empty
// while the scaler does not answer.
func byApp(base, token string) map[string]api.Mapping {
	var ms api.Mappings
	out := map[string]api.Mapping{}
	if getJSON(base+api.Path, token, &ms) != nil {
		return out
	}
	for _, m := range ms.Mappings {
		out[m.AppName] = m
	}
	return out
}

// The scrape credential the scaler is started with.
var scrape = "Basic " + base64.StdEncoding.EncodeToString([]byte("prometheus:scrape-s3cret"))

// metrics is GET /metrics.
func metrics(t *testing.T, base string) string {
	t.Helper()
	raw, err := call(base+"/metrics", scrape)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// metric reads one unlabelled series of GET /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	raw := metrics(t, base)
	for _, line := range strings.Split(raw, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", name, raw)
	return 0
}

func TestOneScalerServesEveryBus(t *testing.T) {
	g := NewWithT(t)
	f := start(t)
	// alice develops in the space of the buses; bob in another, whose one
	// mapped app is bound to nothing.
	other := f.cc.AddSpace(f.org, "elsewhere")
	f.cc.Grant("hottopic-scaler", ccdouble.SpaceDeveloper(other))
	f.cc.AddUser("alice", "pw", ccdouble.SpaceDeveloper(f.space))
	f.cc.AddUser("bob", "pw", ccdouble.SpaceDeveloper(other))
	alice, bob := f.cc.IssueToken("alice", time.Hour), f.cc.IssueToken("bob", time.Hour)
	f.cc.AddApp(other, "stray", map[string]string{mapping.LabelMapped: mapping.LabelMappedTrue}, map[string]string{mapping.AnnTopics: orders})
	// Started before the broker ever ran, the scaler waits for its state.
	sc, base := f.startScaler()
	health := func() scaler.Health {
		var h scaler.Health
		_ = getJSON(base+"/healthz", "", &h)
		return h
	}
	// /healthz takes no token: it says what is wrong, the log says why.
	g.Eventually(health, time.Minute, 100*time.Millisecond).Should(HaveField("Problems",
		ContainElement("the service broker's state is unreadable")), sc.Output)
	g.Expect(sc.Output()).To(ContainSubstring(`msg="the service broker's state is unreadable; buses stay as they are" error="open KV bucket hottopic_buses: nats: bucket not found (has the service broker run yet?)"`))
	f.startBroker()
	f.createService("orders-a")
	f.createService("orders-b")
	guidA, guidB := f.mappedApp("enrich-a"), f.mappedApp("enrich-b")
	f.mappedApp("lonely") // mapped, never bound
	credsA := f.bind("orders-a", "bind-a", guidA)
	credsB := f.bind("orders-b", "bind-b", guidB)
	keyA, keyB := f.bind("orders-a", "key-a", ""), f.bind("orders-b", "key-b", "")

	served := func(m api.Mapping) bool { return m.Valid && m.LagKnown }
	g.Eventually(func() bool {
		ms := byApp(base, alice)
		return served(ms["enrich-a"]) && served(ms["enrich-b"])
	}, time.Minute, 100*time.Millisecond).Should(BeTrue(), sc.Output)
	ms := byApp(base, alice)
	g.Expect(ms["enrich-a"].Bus).To(Equal("orders-a"))
	g.Expect(ms["enrich-b"].Bus).To(Equal("orders-b"))
	g.Expect(ms["lonely"].Valid).To(BeFalse())
	g.Expect(ms["lonely"].Error).To(Equal(mapping.NoBinding("lonely", []string{"orders-a", "orders-b"}).Error()))
	// Each token sees the apps of every bus it may see in Cloud Controller,
	// and no other; an app whose space has no bus is told to create one.
	g.Expect(ms).NotTo(HaveKey("stray"))
	g.Expect(byApp(base, bob)).To(HaveLen(1))
	g.Expect(byApp(base, bob)["stray"].Error).To(Equal(mapping.NoBinding("stray", nil).Error()))
	g.Expect(byApp(base, "")).To(BeEmpty(), "no token, no mappings")

	// A scaler whose state key is not the broker's serves no bus, and says
	// why.
	wrong, wrongBase := f.startScaler(buses.EnvStateKey + "=" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	g.Eventually(func() []scaler.BusHealth {
		var h scaler.Health
		_ = getJSON(wrongBase+"/healthz", "", &h)
		return h.Buses
	}, time.Minute, 100*time.Millisecond).Should(
		ContainElement(HaveField("Problems", ConsistOf("not served"))))
	g.Expect(wrong.Output()).To(ContainSubstring(`msg="cannot serve bus" bus=orders-a bus_id=orders-a-id error="scaler credentials: sealed value does not open with HOTTOPIC_STATE_KEY"`))
	g.Expect(wrong.Signal(syscall.SIGTERM)).To(Succeed())
	g.Expect(wrong.Wait()).To(Succeed())
	listings0 := metric(t, base, "hottopic_scaler_platform_listings_total")
	f.cc.ResetCalls()

	// Lag is read in each app's own bus: an event in A scales A's app only.
	publish(t, keyA, "a1")
	g.Eventually(func() int { return f.cc.Instances(guidA, "web") }, time.Minute).Should(Equal(1), sc.Output)
	ms = byApp(base, alice)
	g.Expect(ms["enrich-a"].Lag).To(Equal(int64(1)))
	g.Expect(ms["enrich-b"].Lag).To(Equal(int64(0)))
	g.Expect(ms["enrich-b"].LagKnown).To(BeTrue())
	g.Expect(f.cc.ScaleCalls(guidB)).To(BeEmpty())

	// Each app's sidecar, bound to its bus, gets that bus's events only.
	appA, appB := f.app(), f.app()
	f.startSidecar("orders-a", credsA, guidA, "enrich-a", appA)
	f.startSidecar("orders-b", credsB, guidB, "enrich-b", appB)
	publish(t, keyB, "b1")
	publish(t, keyA, "a2")
	publish(t, keyB, "b2")
	g.Eventually(appA.received, time.Minute).Should(HaveLen(2))
	g.Eventually(appB.received, time.Minute).Should(HaveLen(2))
	g.Expect(appA.received()).To(Equal([]string{"a1", "a2"}))
	g.Expect(appB.received()).To(Equal([]string{"b1", "b2"}))

	// The API answers for every bus: metrics labelled with the bus, dead
	// letters read in the app's own bus.
	raw := metrics(t, base)
	g.Expect(raw).To(MatchRegexp(`\nhottopic_scaler_app_lag\{app="enrich-b",app_guid=%q,bus="orders-b-id"\} \d`, guidB))
	g.Expect(strings.Count(raw, "\ngo_goroutines ")).To(Equal(1))
	var letters struct {
		AppGUID     string `json:"app_guid"`
		DeadLetters []any  `json:"dead_letters"`
	}
	g.Expect(getJSON(base+"/v1/dead-letters?app="+guidA, alice, &letters)).To(Succeed())
	g.Expect(letters.AppGUID).To(Equal(guidA))
	g.Expect(getJSON(base+"/v1/dead-letters?app=unknown", alice, &letters)).To(MatchError(ContainSubstring(": 404")))
	// Replay through the API runs in the app's own bus, with the scaler's
	// credentials: A's three events, not B's two, to A's app alone; bob may
	// not.
	// A client nobody on the project wrote: the NATS CLI publishes "a3"
	// with A's service key (its .creds, the CA, its inbox prefix) over TLS,
	// and waits for JetStream's acknowledgement; the key may not list
	// streams.
	out, err := natsCLI(t, keyA, "pub", "--jetstream", orders, "a3")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(appA.received, time.Minute).Should(HaveLen(3))
	out, err = natsCLI(t, keyA, "--timeout", "2s", "stream", "ls")
	g.Expect(err).To(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring(`Permissions Violation for Publish to "$JS.API.STREAM.LIST"`))
	replay := `{"topic":"` + orders + `","since":"` + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + `"}`
	_, err = post(base+"/v1/apps/"+guidA+"/replay", bob, replay)
	g.Expect(err).To(MatchError(ContainSubstring(": 404")))
	var replayed struct {
		Events int `json:"events"`
	}
	answer, err := post(base+"/v1/apps/"+guidA+"/replay", alice, replay)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(json.Unmarshal(answer, &replayed)).To(Succeed())
	g.Expect(replayed.Events).To(Equal(3), string(answer))
	g.Eventually(appA.received, time.Minute).Should(Equal([]string{"a1", "a2", "a3", "a1", "a2", "a3"}), sc.Output)
	g.Expect(appB.received()).To(Equal([]string{"b1", "b2"}))

	// Bound to two buses, an app is served by neither: a mapping reads from
	// one bus. Unbound from one, it is served by the other.
	guidL := ms["lonely"].AppGUID
	f.bind("orders-a", "bind-l-a", guidL)
	f.bind("orders-b", "bind-l-b", guidL)
	g.Eventually(func() string { return byApp(base, alice)["lonely"].Error }, time.Minute, 100*time.Millisecond).Should(
		Equal("app lonely is bound to 2 hottopic services (orders-a, orders-b) and a mapping reads from one: run cf unbind-service lonely BUS for all but one"))
	f.unbind("orders-a", "bind-l-a")
	g.Eventually(func() api.Mapping { return byApp(base, alice)["lonely"] }, time.Minute, 100*time.Millisecond).Should(
		And(HaveField("Valid", true), HaveField("LagKnown", true), HaveField("Bus", "orders-b")), sc.Output)

	// A bus created after the scaler started is served.
	f.createService("orders-c")
	guidC := f.mappedApp("late")
	f.bind("orders-c", "bind-c", guidC)
	g.Eventually(func() api.Mapping { return byApp(base, alice)["late"] }, time.Minute, 100*time.Millisecond).Should(
		And(HaveField("Valid", true), HaveField("LagKnown", true), HaveField("Bus", "orders-c")), sc.Output)

	// One listing of the mapped apps per discovery interval serves every
	// bus: Cloud Controller is not asked once per bus.
	g.Eventually(func() float64 { return metric(t, base, "hottopic_scaler_platform_listings_total") - listings0 }, time.Minute).Should(BeNumerically(">=", 10))
	listings := metric(t, base, "hottopic_scaler_platform_listings_total") - listings0
	lists := 0
	for _, c := range f.cc.CallsTo("GET", "/v3/apps") {
		if c.Path == "/v3/apps" && c.Subject == "hottopic-scaler" { // not the token checks
			lists++
		}
	}
	g.Expect(lists).To(BeNumerically("~", listings, 2), "one listing in flight at either end")

	// Unbound, the app is served by no bus; the bus, deleted, is no longer
	// served (and the scaler does not stand in the broker's way).
	f.unbind("orders-c", "bind-c")
	g.Eventually(func() string { return byApp(base, alice)["late"].Error }, time.Minute, 100*time.Millisecond).Should(
		Equal(mapping.NoBinding("late", []string{"orders-a", "orders-b", "orders-c"}).Error()))
	f.deleteService("orders-c")
	g.Eventually(sc.Output, time.Minute).Should(ContainSubstring(`msg="no longer serving bus" bus=orders-c`))
	h := health()
	g.Expect(h.Buses).To(HaveLen(2))
	g.Expect(h.Buses).To(HaveEach(HaveField("Status", "ok")))
	g.Expect(byApp(base, alice)["late"].Error).To(Equal(mapping.NoBinding("late", []string{"orders-a", "orders-b"}).Error()))
	g.Expect(sc.Output()).NotTo(ContainSubstring("s3cret"))
}
