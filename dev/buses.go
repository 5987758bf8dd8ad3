package dev

// The dev runtime's event buses. On its own embedded server the runtime runs
// the path a foundation runs: the server in operator mode as
// `hottopic-broker init` configures it (kept in DATA_DIR/broker), the broker
// on loopback, a bus per service the manifest's apps list (and one for the
// apps that list none), each app bound through the broker's OSB API and
// handed the binding in VCAP_SERVICES. With --nats (a plain server) or
// --cluster there is one bus: the server itself.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/dev/manifest"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/dev/supervisor"
	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// ImplicitService is the service name of the bus of the apps that list no
// services, the name such an app always found in VCAP_SERVICES.
const ImplicitService = "hottopic-dev"

// brokerDir is where the broker's setup (keys, accounts, server
// configuration) is kept, under the data directory.
const brokerDir = "broker"

// bus is one event bus of the run.
type bus struct {
	service  string
	implicit bool
	apps     []int    // indexes of the manifest's apps bound to it
	topics   []string // the topics and output topics of its mapped apps, sorted

	// A connection with the right to make streams and consumers there: the
	// bus's scaler user, or the one connection without a broker.
	nc     *nats.Conn
	closed chan struct{}
	js     jetstream.JetStream
	key    cfenv.Service // the bus's service key (broker only)
	admin  cfenv.Service // its scaler user's credentials (broker only)
}

// planBuses groups the manifest's apps by the services they list.
func planBuses(m *manifest.Manifest) []*bus {
	byName := map[string]*bus{}
	var out []*bus
	for i, a := range m.Apps {
		names, implicit := a.Services, len(a.Services) == 0
		if implicit {
			names = []string{ImplicitService}
		}
		for _, n := range names {
			b := byName[n]
			if b == nil {
				b = &bus{service: n}
				byName[n] = b
				out = append(out, b)
			}
			b.implicit = b.implicit || implicit
			b.apps = append(b.apps, i)
			if a.Mapping != nil {
				b.topics = append(b.topics, a.Mapping.Topics...)
				if a.Mapping.OutputTopic != "" {
					b.topics = append(b.topics, a.Mapping.OutputTopic)
				}
			}
		}
	}
	for _, b := range out {
		sort.Strings(b.topics)
		b.topics = compactStrings(b.topics)
	}
	return out
}

func compactStrings(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// IDs of the run's OSB objects: derived from names, so a restart finds the
// bus (and its queued events) it made before.
func busID(service string) string { return supervisor.NameUUID("dev/service/" + service) }
func bindingID(service, app string) string {
	return supervisor.NameUUID("dev/binding/" + service + "/" + app)
}
func serviceKeyID(service string) string   { return supervisor.NameUUID("dev/service-key/" + service) }
func devOrgGUID() string                   { return supervisor.NameUUID("dev/org") }
func devSpaceGUID() string                 { return supervisor.NameUUID("dev/space") }
func brokerSetupDir(dataDir string) string { return filepath.Join(dataDir, brokerDir) }
func (b *bus) appNames(m *manifest.Manifest) []string {
	var names []string
	for _, i := range b.apps {
		names = append(names, m.Apps[i].Name)
	}
	return names
}

// connectBus dials NATS for one bus and keeps what stop needs.
func (b *bus) connect(ctx context.Context, cfg cfenv.NATS, name string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	closed := make(chan struct{})
	nc, err := cfenv.Connect(cctx, cfg, name, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	b.nc, b.closed, b.js = nc, closed, js
	return nil
}

// drain lets the bus's consumers (the dead-letter watch) end cleanly.
func (b *bus) drain() {
	if b.nc == nil {
		return
	}
	if err := b.nc.Drain(); err == nil {
		select {
		case <-b.closed:
		case <-time.After(2 * time.Second):
		}
	}
}

// startBroker runs the broker on loopback and, through its OSB API, makes
// every bus (with its apps' topics), binds each app to its buses and makes a
// service key per bus. Bindings are made afresh each run (the broker keeps
// no credentials to hand out twice): the previous run's are unbound first.
func (r *runtime) startBroker(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cfg, err := r.setup.BrokerConfig(r.natsURL)
	if err != nil {
		return err
	}
	// The broker's errors come back through its API; its log is not shown.
	b, err := broker.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return fmt.Errorf("broker: %v", err)
	}
	r.onCleanup(b.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("broker: %v", err)
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.onCleanup(func() { _ = srv.Close() })
	c := &osbClient{base: "http://" + ln.Addr().String(), user: cfg.Username, password: cfg.Password}

	offering, err := c.catalog(ctx)
	if err != nil {
		return err
	}
	intCfg, access, err := r.setup.Scaler(r.natsURL)
	if err != nil {
		return err
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	intNC, err := cfenv.Connect(cctx, intCfg, "hottopic-dev/state")
	ccancel()
	if err != nil {
		return err
	}
	defer intNC.Close()
	intJS, err := jetstream.New(intNC)
	if err != nil {
		return err
	}
	st, err := buses.OpenState(ctx, intJS, access.StateKey)
	if err != nil {
		return err
	}

	kept := loadKept(r.o.DataDir)
	bind := func(busID, bindingID, appGUID string, topics []string) (map[string]any, error) {
		key := buses.BindingKey(busID, bindingID)
		if k, ok := kept[key]; ok && slices.Equal(k.Topics, topics) {
			if _, exists, err := st.Binding(ctx, busID, bindingID); err != nil {
				return nil, err
			} else if exists {
				return k.Credentials, nil
			}
		}
		creds, err := c.rebind(ctx, busID, bindingID, appGUID)
		if err != nil {
			return nil, err
		}
		kept[key] = keptBinding{Topics: topics, Credentials: creds}
		return creds, nil
	}
	bindings := map[string]map[string]any{} // by service name, then app name
	current := map[string]bool{}            // buses.BindingKey of this run's bindings
	for _, bs := range r.buses {
		id := busID(bs.service)
		if err := c.provision(ctx, id, bs.service, bs.topics); err != nil {
			return fmt.Errorf("create event bus %s: %v", bs.service, err)
		}
		entry := func(bindingID string, creds map[string]any) map[string]any {
			return map[string]any{
				"label": offering.Name, "provider": nil, "plan": offering.Plan,
				"name": bs.service, "instance_name": bs.service, "instance_guid": id,
				"binding_guid": bindingID, "binding_name": nil, "tags": offering.Tags,
				"credentials": creds, "syslog_drain_url": nil, "volume_mounts": []any{},
			}
		}
		for _, i := range bs.apps {
			name := r.m.Apps[i].Name
			bid := bindingID(bs.service, name)
			current[buses.BindingKey(id, bid)] = true
			creds, err := bind(id, bid, AppGUID(name), bs.topics)
			if err != nil {
				return fmt.Errorf("bind app %s to event bus %s: %v", name, bs.service, err)
			}
			if bindings[bs.service] == nil {
				bindings[bs.service] = map[string]any{}
			}
			bindings[bs.service][name] = entry(bid, creds)
		}
		kid := serviceKeyID(bs.service)
		current[buses.BindingKey(id, kid)] = true
		creds, err := bind(id, kid, "", bs.topics)
		if err != nil {
			return fmt.Errorf("service key of event bus %s: %v", bs.service, err)
		}
		raw, _ := json.Marshal(entry(kid, creds))
		if err := json.Unmarshal(raw, &bs.key); err != nil {
			return err
		}

		rec, ok, err := st.Bus(ctx, id)
		if err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("event bus %s is not in the broker's state after it was made", bs.service)
		}
		scalerCreds, err := st.ScalerCreds(rec)
		if err != nil {
			return fmt.Errorf("event bus %s: %v", bs.service, err)
		}
		bs.admin = serviceOf(bs.service, r.natsURL, scalerCreds)
		busCfg, err := cfenv.NATSFromService(bs.admin)
		if err != nil {
			return err
		}
		if err := bs.connect(ctx, busCfg, "hottopic-dev/"+bs.service); err != nil {
			return err
		}
		r.onCleanup(bs.nc.Close)
	}
	// An app the manifest moved to another bus (or dropped) keeps no
	// binding from an earlier run: bound to two buses, it would be served
	// by neither.
	all, err := st.Bindings(ctx)
	if err != nil {
		return err
	}
	for _, old := range all {
		if !current[buses.BindingKey(old.BusID, old.ID)] {
			if err := c.unbind(ctx, old.BusID, old.ID); err != nil {
				return fmt.Errorf("remove a binding of an earlier run: %v", err)
			}
		}
	}
	for key := range kept {
		if !current[key] {
			delete(kept, key)
		}
	}
	if err := saveKept(r.o.DataDir, kept); err != nil {
		return err
	}
	r.vcap = map[string]string{}
	for _, a := range r.m.Apps {
		services := a.Services
		if len(services) == 0 {
			services = []string{ImplicitService}
		}
		var list []any
		for _, s := range services {
			list = append(list, bindings[s][a.Name])
		}
		raw, _ := json.Marshal(map[string]any{offering.Name: list})
		r.vcap[a.Name] = string(raw)
	}
	return nil
}

// keptBinding is a binding's credentials, kept in the data directory (mode
// 0600, beside the broker's keys) so that a restart reuses them: the broker
// hands credentials out once, and binding again costs an unbind and an
// account push (a second each) per app. Topics: the bus's topics when it was
// made; a binding made before the topics changed is made again (its
// permissions name the old ones).
type keptBinding struct {
	Topics      []string       `json:"topics"`
	Credentials map[string]any `json:"credentials"`
}

func keptFile(dataDir string) string { return filepath.Join(brokerSetupDir(dataDir), "bindings.json") }

// loadKept reads the kept bindings; a missing or unreadable file keeps none
// (every binding is made again).
func loadKept(dataDir string) map[string]keptBinding {
	kept := map[string]keptBinding{}
	raw, err := os.ReadFile(keptFile(dataDir))
	if err != nil || json.Unmarshal(raw, &kept) != nil {
		return map[string]keptBinding{}
	}
	return kept
}

func saveKept(dataDir string, kept map[string]keptBinding) error {
	raw, err := json.Marshal(kept)
	if err != nil {
		return err
	}
	tmp := keptFile(dataDir) + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("keep the bindings' credentials: %v", err)
	}
	return os.Rename(tmp, keptFile(dataDir))
}

func serviceOf(name, uri, creds string) cfenv.Service {
	q := func(s string) json.RawMessage { raw, _ := json.Marshal(s); return raw }
	return cfenv.Service{Name: name, Credentials: map[string]json.RawMessage{"uri": q(uri), "creds": q(creds)}}
}

// describeBuses is the line that names each bus and its apps.
func describeBuses(buses []*bus, m *manifest.Manifest) string {
	var parts []string
	for _, b := range buses {
		parts = append(parts, fmt.Sprintf("%s ← %s", b.service, strings.Join(b.appNames(m), ", ")))
	}
	return strings.Join(parts, "; ")
}

// stateBuses is what `hottopic publish --service` and the CLI's operations
// read.
func stateBuses(buses []*bus, m *manifest.Manifest) []state.Bus {
	var out []state.Bus
	for _, b := range buses {
		out = append(out, state.Bus{Service: b.service, Implicit: b.implicit, Apps: b.appNames(m),
			Topics: append([]string{}, b.topics...), Key: b.key, Admin: b.admin})
	}
	return out
}

// osbClient calls the broker's Open Service Broker API, as Cloud Controller
// would.
type osbClient struct{ base, user, password string }

type offering struct {
	Name, Plan string
	Tags       []string
}

func (c *osbClient) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-Broker-API-Version", "2.17")
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(c.user, c.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// fail is the broker's answer as one line.
func fail(method, path string, code int, raw []byte) error {
	var e struct{ Description string }
	_ = json.Unmarshal(raw, &e)
	if e.Description == "" {
		e.Description = http.StatusText(code)
	}
	return fmt.Errorf("broker answered %s %s with %d: %s", method, path, code, e.Description)
}

func (c *osbClient) catalog(ctx context.Context) (offering, error) {
	const path = "/v2/catalog"
	code, raw, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return offering{}, fmt.Errorf("broker: %v", err)
	}
	if code != http.StatusOK {
		return offering{}, fail(http.MethodGet, path, code, raw)
	}
	var cat struct {
		Services []struct {
			ID, Name string
			Tags     []string
			Plans    []struct{ ID, Name string }
		}
	}
	if err := json.Unmarshal(raw, &cat); err != nil {
		return offering{}, fmt.Errorf("broker catalog: %v", err)
	}
	for _, s := range cat.Services {
		for _, p := range s.Plans {
			if s.ID == broker.ServiceID && p.ID == broker.PlanID {
				return offering{Name: s.Name, Plan: p.Name, Tags: s.Tags}, nil
			}
		}
	}
	return offering{}, fmt.Errorf("broker catalog has no service %s with plan %s", broker.ServiceID, broker.PlanID)
}

// provision makes the bus, or finds it from an earlier run; when the
// manifest's topics changed since, it updates them.
func (c *osbClient) provision(ctx context.Context, id, name string, topics []string) error {
	path := "/v2/service_instances/" + id
	params := map[string]any{"topics": append([]string{}, topics...)}
	code, raw, err := c.do(ctx, http.MethodPut, path, map[string]any{
		"service_id": broker.ServiceID, "plan_id": broker.PlanID,
		"organization_guid": devOrgGUID(), "space_guid": devSpaceGUID(),
		"parameters": params,
		"context": map[string]any{
			"platform": "cloudfoundry", "instance_name": name,
			"organization_guid": devOrgGUID(), "space_guid": devSpaceGUID(),
		},
	})
	switch {
	case err != nil:
		return err
	case code == http.StatusCreated || code == http.StatusOK:
		return nil
	case code != http.StatusConflict:
		return fail(http.MethodPut, path, code, raw)
	}
	code, raw, err = c.do(ctx, http.MethodPatch, path, map[string]any{
		"service_id": broker.ServiceID, "plan_id": broker.PlanID, "parameters": params,
	})
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fail(http.MethodPatch, path, code, raw)
	}
	return nil
}

// unbind removes a binding; one already gone is no error.
func (c *osbClient) unbind(ctx context.Context, instanceID, bindingID string) error {
	path := "/v2/service_instances/" + instanceID + "/service_bindings/" + bindingID
	q := url.Values{"service_id": {broker.ServiceID}, "plan_id": {broker.PlanID}}
	code, raw, err := c.do(ctx, http.MethodDelete, path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK && code != http.StatusGone {
		return fail(http.MethodDelete, path, code, raw)
	}
	return nil
}

// rebind unbinds bindingID if an earlier run left it, then binds it again
// (an app when appGUID is set, else a service key) and returns the
// credentials.
func (c *osbClient) rebind(ctx context.Context, instanceID, bindingID, appGUID string) (map[string]any, error) {
	path := "/v2/service_instances/" + instanceID + "/service_bindings/" + bindingID
	if err := c.unbind(ctx, instanceID, bindingID); err != nil {
		return nil, err
	}
	req := map[string]any{"service_id": broker.ServiceID, "plan_id": broker.PlanID}
	if appGUID != "" {
		req["app_guid"] = appGUID
		req["bind_resource"] = map[string]any{"app_guid": appGUID}
	}
	code, raw, err := c.do(ctx, http.MethodPut, path, req)
	if err != nil {
		return nil, err
	}
	if code != http.StatusCreated {
		return nil, fail(http.MethodPut, path, code, raw)
	}
	var out struct {
		Credentials map[string]any `json:"credentials"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("binding %s: %v", bindingID, err)
	}
	return out.Credentials, nil
}
