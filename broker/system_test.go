package broker_test

// The test system: a real nats-server (scripts/tools.sh nats-server)
// configured by `hottopic-broker init`, and the broker as a process, both on
// free loopback ports; an OSB client; helpers to use credentials from outside.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// natsServer is the nats-server binary built by scripts/tools.sh.
func natsServer(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../scripts/tools.sh", "nats-server").Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh nats-server: %v", err)
	}
	return strings.TrimSpace(string(out))
}

type system struct {
	t         *testing.T
	dir       string
	natsURL   string
	brokerURL string
	env       map[string]string // broker.env
	// natsOpts are the options scaler.env gives a connection (its CA,
	// with --tls), as cfenv reads them.
	natsOpts []nats.Option
}

// startSystem runs init (with initFlags, e.g. --tls), the server and a
// broker.
func startSystem(t *testing.T, initFlags ...string) *system {
	t.Helper()
	bin := proctest.Build(t, "./cmd/hottopic-broker")
	s := &system{t: t, dir: t.TempDir()}
	natsPort := proctest.FreePort(t)
	out, code := proctest.Run(t, exec.Command(bin, append(append([]string{"init", "--port", strconv.Itoa(natsPort)}, initFlags...), s.dir)...), time.Minute)
	if code != 0 {
		t.Fatalf("hottopic-broker init: %s", out)
	}
	ns := proctest.Start(t, exec.Command(natsServer(t), "-c", filepath.Join(s.dir, broker.ServerConfFile), "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort)))
	NewWithT(t).Eventually(ns.Out, time.Minute).Should(gbytes.Say("Server is ready"))
	s.natsURL = fmt.Sprintf("%s://127.0.0.1:%d", s.readEnvs(), natsPort)
	s.brokerURL = s.startBroker()
	return s
}

// readEnvs reads broker.env and the NATS options of scaler.env; it returns
// the URL scheme init wrote (nats or tls).
func (s *system) readEnvs() string {
	s.t.Helper()
	s.env = readEnv(s.t, filepath.Join(s.dir, broker.BrokerEnvFile))
	scalerEnv := readEnv(s.t, filepath.Join(s.dir, broker.ScalerEnvFile))
	cfg, err := cfenv.NATSFromEnv(func(k string) string { return scalerEnv[k] })
	if err != nil {
		s.t.Fatalf("scaler.env: %v", err)
	}
	s.natsOpts = slices.Clip(cfg.Options)
	scheme, _, _ := strings.Cut(cfg.URLs[0], "://")
	return scheme
}

// readEnv parses an env file init wrote (broker.env, scaler.env).
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	env, err := broker.ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// startBroker starts a broker process with broker.env and returns its URL;
// every broker of the system shares the state.
func (s *system) startBroker(override ...string) string {
	s.t.Helper()
	port := proctest.FreePort(s.t)
	cmd := exec.Command(proctest.Build(s.t, "./cmd/hottopic-broker"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "PORT=" + strconv.Itoa(port)}
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, override...) // the last of a key wins
	b := proctest.Start(s.t, cmd)
	NewWithT(s.t).Eventually(b.Out, time.Minute).Should(gbytes.Say("hottopic-broker ready"))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// osb sends an OSB request with the broker's credentials; it returns the
// status and the decoded JSON body.
func (s *system) osb(method, path string, body any) (int, map[string]any) {
	return s.osbAs(s.env[broker.EnvUsername], s.env[broker.EnvPassword], method, path, body)
}

func (s *system) osbAs(user, password, method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	code, out, err := osbRequest(s.brokerURL, user, password, method, path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	return code, out
}

// osbRequest is one OSB request to the broker at brokerURL; it is safe to
// call from any goroutine.
func osbRequest(brokerURL, user, password, method, path string, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, brokerURL+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-Broker-API-Version", "2.17")
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, nil
}

const query = "?service_id=" + broker.ServiceID + "&plan_id=" + broker.PlanID

func (s *system) provision(id string, topics ...string) {
	s.t.Helper()
	code, body := s.osb("PUT", "/v2/service_instances/"+id, map[string]any{
		"service_id": broker.ServiceID, "plan_id": broker.PlanID,
		"organization_guid": "org", "space_guid": "space",
		"parameters": map[string]any{"topics": topics},
	})
	if code != http.StatusCreated {
		s.t.Fatalf("provision %s: %d %v", id, code, body)
	}
}

// bind binds an app (appGUID != "") or makes a service key, and returns the
// credentials.
func (s *system) bind(instance, binding, appGUID string) map[string]any {
	s.t.Helper()
	req := map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID}
	if appGUID != "" {
		req["bind_resource"] = map[string]any{"app_guid": appGUID}
	}
	code, body := s.osb("PUT", "/v2/service_instances/"+instance+"/service_bindings/"+binding, req)
	if code != http.StatusCreated {
		s.t.Fatalf("bind %s: %d %v", binding, code, body)
	}
	return body["credentials"].(map[string]any)
}

func (s *system) unbind(instance, binding string) int {
	s.t.Helper()
	code, _ := s.osb("DELETE", "/v2/service_instances/"+instance+"/service_bindings/"+binding+query, nil)
	return code
}

// client is a NATS connection made with binding credentials, whose
// asynchronous errors (permission violations) are collected.
type client struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	errs   chan error
	closed chan struct{}
}

func credsOpt(t *testing.T, creds string) nats.Option {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT([]byte(creds))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.ParseDecoratedNKey([]byte(creds))
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	return nats.UserJWTAndSeed(token, string(seed))
}

// dial connects to the uri of the credentials a binding gave, with the
// options the sidecar's cfenv makes of them (creds, inbox_prefix, ca_cert),
// without reconnecting.
func (s *system) dial(creds map[string]any) (*client, error) {
	c := &client{errs: make(chan error, 100), closed: make(chan struct{})}
	svc := cfenv.Service{Name: "bus", Credentials: map[string]json.RawMessage{}}
	for k, v := range creds {
		svc.Credentials[k], _ = json.Marshal(v)
	}
	cfg, err := cfenv.NATSFromService(svc)
	if err != nil {
		s.t.Fatal(err)
	}
	opts := append(cfg.Options,
		nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
	)
	nc, err := nats.Connect(creds["uri"].(string), opts...)
	if err != nil {
		return nil, err
	}
	s.t.Cleanup(nc.Close)
	c.nc = nc
	c.js, _ = jetstream.New(nc)
	return c, nil
}

func (s *system) mustDial(creds map[string]any) *client {
	s.t.Helper()
	c, err := s.dial(creds)
	if err != nil {
		s.t.Fatalf("connect with binding credentials: %v", err)
	}
	return c
}

// awaitViolation waits for the server's permission violation naming subject
// ("Publish to" or "Subscription to"). The server always sends one for a
// refused operation; the wait bound only keeps a broken test from hanging.
func (c *client) awaitViolation(t *testing.T, kind, subject string) {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s %q", kind, subject)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if strings.Contains(err.Error(), want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s", want)
		}
	}
}

// deniedPub publishes to subject and waits for the server to refuse it.
func (c *client) deniedPub(t *testing.T, subject string) {
	t.Helper()
	if err := c.nc.Publish(subject, []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.awaitViolation(t, "Publish to", subject)
}

// deniedSub subscribes to subject and waits for the server to refuse it.
func (c *client) deniedSub(t *testing.T, subject string) {
	t.Helper()
	if _, err := c.nc.SubscribeSync(subject); err != nil {
		t.Fatal(err)
	}
	c.awaitViolation(t, "Subscription to", subject)
}

// state opens the broker's state as the scaler would: a user of the internal
// account minted with scaler.env's signing key, and the state key.
func (s *system) state() *buses.State {
	s.t.Helper()
	ijs, key := s.internal()
	st, err := buses.OpenState(context.Background(), ijs, key)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// internal connects to the internal account as the scaler would (a user
// minted with scaler.env's signing key); it returns JetStream there and the
// state key.
func (s *system) internal() (jetstream.JetStream, []byte) {
	s.t.Helper()
	env := readEnv(s.t, filepath.Join(s.dir, broker.ScalerEnvFile))
	kp, err := nkeys.FromSeed([]byte(env[broker.EnvInternalAccountKey]))
	if err != nil {
		s.t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.IssuerAccount = env[broker.EnvInternalAccount]
	token, err := uc.Encode(kp)
	if err != nil {
		s.t.Fatal(err)
	}
	inc, err := nats.Connect(s.natsURL, append(s.natsOpts, nats.UserJWTAndSeed(token, string(useed)))...)
	if err != nil {
		s.t.Fatalf("connect to the internal account: %v", err)
	}
	s.t.Cleanup(inc.Close)
	ijs, _ := jetstream.New(inc)
	key, _ := base64.StdEncoding.DecodeString(env[broker.EnvStateKey])
	return ijs, key
}

// admin connects to a bus as the scaler would: with the bus's scaler
// credentials read from the broker's state in the internal account.
func (s *system) admin(busID string) (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	ctx := context.Background()
	st := s.state()
	bus, ok, err := st.Bus(ctx, busID)
	if err != nil || !ok {
		s.t.Fatalf("bus %s in the state: ok=%v err=%v", busID, ok, err)
	}
	creds, err := st.ScalerCreds(bus)
	if err != nil {
		s.t.Fatal(err)
	}
	nc, err := nats.Connect(s.natsURL, append(s.natsOpts, credsOpt(s.t, creds), nats.NoReconnect())...)
	if err != nil {
		s.t.Fatalf("connect to bus %s with its scaler credentials: %v", busID, err)
	}
	s.t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return nc, js
}

// ordersStream makes the bus's stream of orders as the scaler would, with
// the bus's scaler credentials, and returns its info.
func (s *system) ordersStream(ctx context.Context, busID string) *jetstream.StreamInfo {
	s.t.Helper()
	_, js := s.admin(busID)
	stream, err := provision.EnsureTopicStream(ctx, js, orders, provision.StreamOptions{})
	if err != nil {
		s.t.Fatalf("bus %s: make the stream of %s: %v", busID, orders, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return info
}

// watcher connects to a bus as a new unrestricted user signed with the
// bus's signing key (read from the state): it outlives the revocation of
// the bus's scaler user, which deprovisioning makes first.
func (s *system) watcher(busID string) *nats.Conn {
	s.t.Helper()
	ctx := context.Background()
	st := s.state()
	bus, ok, err := st.Bus(ctx, busID)
	if err != nil || !ok {
		s.t.Fatalf("bus %s in the state: ok=%v err=%v", busID, ok, err)
	}
	seed, err := st.Open(bus.SigningSeed, buses.SealedAt(bus.ID, buses.FieldSigningSeed))
	if err != nil {
		s.t.Fatal(err)
	}
	akp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		s.t.Fatal(err)
	}
	creds, _, err := buses.IssueUser("test-watcher", bus.Account, akp, jwt.Permissions{})
	if err != nil {
		s.t.Fatal(err)
	}
	nc, err := nats.Connect(s.natsURL, append(s.natsOpts, credsOpt(s.t, creds), nats.NoReconnect())...)
	if err != nil {
		s.t.Fatalf("connect to bus %s as a new user: %v", busID, err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// startSidecar runs hottopic-sidecar as Cloud Foundry would with this
// binding: VCAP_SERVICES holds the binding's credentials, the app listens on
// appPort.
func (s *system) startSidecar(creds map[string]any, appGUID string, appPort int) *proctest.Proc {
	s.t.Helper()
	application, _ := json.Marshal(map[string]any{"application_id": appGUID, "application_name": "enrich", "instance_index": 0})
	cmd := exec.Command(proctest.Build(s.t, "./cmd/hottopic-sidecar"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"PORT=" + strconv.Itoa(appPort),
		"HOTTOPIC_LISTEN=127.0.0.1:" + strconv.Itoa(proctest.FreePort(s.t)),
		"VCAP_SERVICES=" + vcapServices(creds),
		"VCAP_APPLICATION=" + string(application),
	}
	return proctest.Start(s.t, cmd)
}

// vcapServices is VCAP_SERVICES as Cloud Foundry gives it to an app bound
// with these credentials.
func vcapServices(creds map[string]any) string {
	services, _ := json.Marshal(map[string]any{"hottopic": []any{map[string]any{
		"name": "orders-bus", "label": "hottopic", "tags": []string{"hottopic", "nats", "events"}, "credentials": creds,
	}}})
	return string(services)
}
