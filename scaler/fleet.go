package scaler

// The fleet: in broker mode (WithBuses) one deployment serves every bus of
// the service broker. It follows the broker's state (internal/buses) in the
// internal account, runs one Scaler per bus on a connection made from that
// bus's scaler credentials, and asks the platform for the mapped apps once
// per discovery interval for all buses, handing each bus's Scaler only the
// apps bound to it. A mapped app bound to no bus, or to several, is shown
// invalid and served by none.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler/api"
)

// stateRetry is how long the fleet waits before reading the broker's state
// again after it could not (the broker has not run yet, NATS is away).
const stateRetry = 5 * time.Second

type fleet struct {
	cfg      cfenv.NATS // the internal account's; bus connections swap the user
	internal *nats.Conn
	p        Platform
	opts     []Option
	o        options
	log      *slog.Logger
	reg      *prometheus.Registry
	listings prometheus.Counter

	first     chan struct{} // closed once the first discovery was tried
	firstOnce sync.Once

	mu         sync.Mutex
	runs       map[string]*busRun // by bus ID
	snap       buses.Snapshot
	stateRead  bool
	stateErr   string
	snapErrs   string
	apps       []App
	appsErr    error
	discovered bool
	assigned   map[string][]App // bus ID → mapped apps bound to it
	orphans    []orphan         // mapped apps bound to no bus, or to several
	told       map[string]string
}

// orphan is a mapped app that no bus serves, and why.
type orphan struct {
	app    App
	reason error
}

// busRun is one bus's Scaler and its connection.
type busRun struct {
	bus    *buses.Bus
	cancel context.CancelFunc
	done   chan struct{}
	sc     *Scaler // nil until connected (f.mu)
	err    string  // why it does not run (f.mu)
}

// BusHealth is one bus in /healthz (broker mode), by instance ID only:
// /healthz takes no token, so it names no bus (a tenant's name) and no app.
type BusHealth struct {
	ID       string   `json:"id"`
	Status   string   `json:"status"`
	Leader   bool     `json:"leader"`
	Problems []string `json:"problems"`
}

func newFleet(internal *nats.Conn, cfg cfenv.NATS, p Platform, opts []Option) *fleet {
	o := newOptions(opts)
	f := &fleet{
		cfg: cfg, internal: internal, p: p, o: o, log: o.logger,
		// Every bus's Scaler takes part in its bus's election under one name.
		opts:  append(slices.Clone(opts), WithInstanceID(o.instanceID)),
		first: make(chan struct{}),
		runs:  map[string]*busRun{},
		told:  map[string]string{},
	}
	f.reg = prometheus.NewRegistry()
	f.listings = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_platform_listings_total", Help: "Listings of the mapped apps on the platform: one per discovery interval for all buses."})
	f.reg.MustRegister(f.listings, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hottopic_scaler_buses", Help: "Buses of the service broker this scaler serves."},
			func() float64 { return float64(len(f.scalers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hottopic_scaler_unbound_apps", Help: "Mapped apps bound to no bus, or to several: served by none."},
			func() float64 { f.mu.Lock(); defer f.mu.Unlock(); return float64(len(f.orphans)) }))
	return f
}

// run serves the buses until ctx ends.
func (f *fleet) run(ctx context.Context) error {
	f.log.Info("scaler starting for every bus of the service broker", "instance", f.o.instanceID,
		"poll_interval", f.o.poll.String(), "discovery_interval", f.o.discovery.String())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.followState(ctx) }()
	go func() { defer wg.Done(); f.discoverLoop(ctx) }()
	wg.Wait()
	f.mu.Lock()
	runs := f.runs
	f.runs = map[string]*busRun{}
	f.mu.Unlock()
	for _, r := range runs {
		r.stop()
	}
	f.log.Info("scaler stopped", "instance", f.o.instanceID)
	return nil
}

// followState reads the broker's state and follows its changes, reading it
// again after a failure.
func (f *fleet) followState(ctx context.Context) {
	js, err := jetstream.New(f.internal)
	if err != nil {
		f.setStateErr(err)
		return
	}
	for {
		st, err := buses.OpenState(ctx, js, f.o.stateKey)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			err = fmt.Errorf("%w (has the service broker run yet?)", err)
		}
		if err == nil {
			err = st.Follow(ctx, func(s buses.Snapshot) { f.stateChanged(ctx, st, s) })
		}
		if ctx.Err() != nil {
			return
		}
		f.setStateErr(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(stateRetry):
		}
	}
}

func (f *fleet) setStateErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err.Error() != f.stateErr {
		f.log.Warn("the service broker's state is unreadable; buses stay as they are", "error", err)
	}
	f.stateErr = err.Error()
}

// stateChanged starts a Scaler for each new bus, stops those of buses gone
// or being deleted, and hands every bus its apps again.
func (f *fleet) stateChanged(ctx context.Context, st *buses.State, s buses.Snapshot) {
	var stop []*busRun
	f.mu.Lock()
	if f.stateErr != "" {
		f.log.Info("the service broker's state is readable again")
		f.stateErr = ""
	}
	if e := strings.Join(s.Errors, "; "); e != f.snapErrs {
		if e != "" {
			f.log.Warn("records of the broker's state are unreadable; skipped", "error", e)
		}
		f.snapErrs = e
	}
	f.snap, f.stateRead = s, true
	for id, r := range f.runs {
		if b := s.Buses[id]; b == nil || b.Deleting || b.ScalerCreds != r.bus.ScalerCreds {
			stop = append(stop, r)
			delete(f.runs, id)
		}
	}
	for id, b := range s.Buses {
		if f.runs[id] == nil && !b.Deleting {
			f.runs[id] = f.start(ctx, st, b)
		}
	}
	f.assign()
	f.mu.Unlock()
	for _, r := range stop {
		f.log.Info("no longer serving bus", "bus", r.bus.DisplayName(), "bus_id", r.bus.ID)
		r.stop()
	}
	f.poke()
}

// start runs a Scaler for bus b (f.mu held): it connects with the bus's
// scaler credentials, as long as it takes.
func (f *fleet) start(ctx context.Context, st *buses.State, b *buses.Bus) *busRun {
	rctx, cancel := context.WithCancel(ctx)
	r := &busRun{bus: b, cancel: cancel, done: make(chan struct{})}
	log := f.log.With("bus", b.DisplayName())
	creds, err := st.ScalerCreds(b)
	var user nats.Option
	if err == nil {
		user, err = buses.CredsOption(creds)
	}
	if err != nil {
		r.err = "scaler credentials: " + err.Error()
		log.Warn("cannot serve bus", "bus_id", b.ID, "error", r.err)
		close(r.done)
		return r
	}
	log.Info("serving bus", "bus_id", b.ID, "account", b.Account)
	go func() {
		defer close(r.done)
		nc := f.connectBus(rctx, r, log, user)
		if nc == nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			f.setRunErr(r, err.Error())
			return
		}
		sc := New(js, busView{f: f, id: b.ID}, append(slices.Clone(f.opts), WithLogger(log))...)
		f.mu.Lock()
		r.sc, r.err = sc, ""
		f.mu.Unlock()
		_ = sc.Run(rctx)
	}()
	return r
}

// connectBus connects to the bus's account, waiting as long as it takes;
// nil when ctx ended first.
func (f *fleet) connectBus(ctx context.Context, r *busRun, log *slog.Logger, user nats.Option) *nats.Conn {
	for wait := 5 * time.Second; ; wait = time.Minute {
		cctx, cancel := context.WithTimeout(ctx, wait)
		nc, err := cfenv.Connect(cctx, f.cfg, "hottopic-scaler/bus/"+r.bus.ID,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("NATS disconnected", "error", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }),
			user) // last: it replaces the internal account's user
		cancel()
		if err == nil {
			return nc
		}
		if ctx.Err() != nil {
			return nil
		}
		f.setRunErr(r, err.Error())
		log.Warn("bus unreachable; waiting for it", "error", err)
	}
}

func (f *fleet) setRunErr(r *busRun, e string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.err = e
}

func (r *busRun) stop() {
	r.cancel()
	<-r.done
}

// discoverLoop asks the platform for the mapped apps once per interval, for
// every bus.
func (f *fleet) discoverLoop(ctx context.Context) {
	t := time.NewTicker(f.o.discovery)
	defer t.Stop()
	for {
		apps, err := f.p.MappedApps(ctx)
		f.listings.Inc()
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		switch {
		case err != nil && (f.appsErr == nil || f.appsErr.Error() != err.Error()):
			f.log.Warn("discovery failed; mappings stay as they are", "error", err)
		case err == nil && f.appsErr != nil:
			f.log.Info("discovery works again")
		}
		f.appsErr = err
		if err == nil {
			f.apps, f.discovered = apps, true
			f.assign()
		}
		f.mu.Unlock()
		f.firstOnce.Do(func() { close(f.first) })
		f.poke()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// assign hands each bus the mapped apps bound to it (f.mu held), once both
// the state and the apps are known.
func (f *fleet) assign() {
	if !f.stateRead || !f.discovered {
		return
	}
	bound := map[string][]string{} // app GUID → bus IDs
	for _, b := range f.snap.Bindings {
		if bus := f.snap.Buses[b.BusID]; b.AppGUID == "" || bus == nil || bus.Deleting || slices.Contains(bound[b.AppGUID], b.BusID) {
			continue
		}
		bound[b.AppGUID] = append(bound[b.AppGUID], b.BusID)
	}
	f.assigned = map[string][]App{}
	f.orphans = nil
	told := map[string]string{}
	for _, a := range f.apps {
		ids := bound[a.GUID]
		if len(ids) == 1 {
			f.assigned[ids[0]] = append(f.assigned[ids[0]], a)
			continue
		}
		var reason error
		if len(ids) == 0 {
			reason = mapping.NoBinding(a.Name, f.busNames(func(b *buses.Bus) bool { return a.SpaceGUID == "" || b.SpaceGUID == a.SpaceGUID }))
		} else {
			names := f.busNames(func(b *buses.Bus) bool { return slices.Contains(ids, b.ID) })
			reason = fmt.Errorf("app %s is bound to %d hottopic services (%s) and a mapping reads from one: run cf unbind-service %s BUS for all but one", a.Name, len(ids), strings.Join(names, ", "), a.Name)
		}
		f.orphans = append(f.orphans, orphan{app: a, reason: reason})
		told[a.GUID] = reason.Error()
		if f.told[a.GUID] != reason.Error() {
			f.log.Warn("invalid mapping: the app is served by no bus", "app", a.Name, "app_guid", a.GUID, "error", reason)
		}
	}
	f.told = told
}

// busNames are the sorted names of the buses that keep says (f.mu held).
func (f *fleet) busNames(keep func(*buses.Bus) bool) []string {
	var names []string
	for _, b := range f.snap.Buses {
		if !b.Deleting && keep(b) {
			names = append(names, b.DisplayName())
		}
	}
	sort.Strings(names)
	return names
}

// poke has every bus's Scaler take its apps again now.
func (f *fleet) poke() {
	for _, r := range f.scalers() {
		r.sc.requestDiscovery()
	}
}

// servedBus is a running bus Scaler.
type servedBus struct {
	bus *buses.Bus
	sc  *Scaler
}

// scalers are the buses' running Scalers, by bus ID.
func (f *fleet) scalers() []servedBus {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]servedBus, 0, len(f.runs))
	for _, r := range f.runs {
		if r.sc != nil {
			out = append(out, servedBus{r.bus, r.sc})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].bus.ID < out[j].bus.ID })
	return out
}

// busView is the Platform of one bus's Scaler: the apps bound to the bus,
// from the fleet's one discovery; instances read and set on the platform.
type busView struct {
	f  *fleet
	id string
}

func (v busView) MappedApps(ctx context.Context) ([]App, error) {
	select {
	case <-v.f.first:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	if v.f.appsErr != nil {
		return nil, v.f.appsErr
	}
	return slices.Clone(v.f.assigned[v.id]), nil
}

func (v busView) Instances(ctx context.Context, appGUID string) (int, error) {
	return v.f.p.Instances(ctx, appGUID)
}

func (v busView) Scale(ctx context.Context, appGUID string, n int) error {
	return v.f.p.Scale(ctx, appGUID, n)
}

// Status is every bus's mappings, and the mapped apps no bus serves.
func (f *fleet) Status() api.Mappings {
	out := api.Mappings{Instance: f.o.instanceID, Mappings: []api.Mapping{}}
	for _, r := range f.scalers() {
		st := r.sc.Status()
		out.Leader = out.Leader || st.Leader
		for _, m := range st.Mappings {
			m.Bus = r.bus.DisplayName()
			out.Mappings = append(out.Mappings, m)
		}
	}
	out.Mappings = append(out.Mappings, f.orphanMappings()...)
	sortMappings(out.Mappings)
	return out
}

func (f *fleet) orphanMappings() []api.Mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]api.Mapping, 0, len(f.orphans))
	for _, o := range f.orphans {
		out = append(out, api.Mapping{App: o.app.Name, AppGUID: o.app.GUID, AppName: o.app.Name, Error: o.reason.Error(), Errors: []string{}})
	}
	return out
}

// Health is the fleet's: the broker's state and discovery, then each bus.
func (f *fleet) Health() Health {
	served := f.scalers()
	f.mu.Lock()
	h := Health{Status: "ok", Problems: []string{}, Instance: f.o.instanceID, NATSConnected: f.internal.IsConnected()}
	add := func(p string) { h.Problems = append(h.Problems, p) }
	if !h.NATSConnected {
		add("NATS not connected (the service broker's state)")
	}
	if f.stateErr != "" {
		add("the service broker's state is unreadable (" + f.stateErr + ")")
	}
	if f.appsErr != nil {
		h.DiscoveryErr = f.appsErr.Error()
		add("discovery failed (" + h.DiscoveryErr + ")")
	}
	ids := make([]string, 0, len(f.runs))
	for id := range f.runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	runs := make([]*busRun, len(ids))
	for i, id := range ids {
		runs[i] = f.runs[id]
	}
	errs := map[string]string{}
	for _, r := range runs {
		errs[r.bus.ID] = r.err
	}
	f.mu.Unlock()

	health := map[string]Health{}
	for _, s := range served {
		health[s.bus.ID] = s.sc.Health()
	}
	for _, r := range runs {
		b := BusHealth{ID: r.bus.ID, Status: "ok", Problems: []string{}}
		if sh, ok := health[r.bus.ID]; ok {
			b.Leader = sh.Leader
			h.Leader = h.Leader || sh.Leader
			if sh.LastPoll.After(h.LastPoll) {
				h.LastPoll = sh.LastPoll
			}
			for _, p := range sh.Problems {
				if !strings.HasPrefix(p, "discovery failed") { // the fleet's, said once above
					b.Problems = append(b.Problems, p)
				}
			}
		} else if errs[r.bus.ID] != "" {
			b.Problems = append(b.Problems, "not served ("+errs[r.bus.ID]+")")
		} else {
			b.Problems = append(b.Problems, "connecting")
		}
		for _, p := range b.Problems {
			add("bus " + r.bus.ID + ": " + p)
		}
		if len(b.Problems) > 0 {
			b.Status = "degraded"
		}
		h.Buses = append(h.Buses, b)
	}
	if len(h.Problems) > 0 {
		h.Status = "degraded"
	}
	return h
}

// Dashboard is every bus's apps, and the mapped apps no bus serves.
func (f *fleet) Dashboard() Dashboard {
	d := Dashboard{Now: time.Now().UnixMilli(), WindowMS: historyWindow.Milliseconds(), Instance: f.o.instanceID, Apps: []DashboardApp{}}
	var dlqErrs []string
	for _, r := range f.scalers() {
		bd := r.sc.Dashboard()
		d.Leader = d.Leader || bd.Leader
		if bd.DLQError != "" {
			dlqErrs = append(dlqErrs, "bus "+r.bus.DisplayName()+": "+bd.DLQError)
		}
		for _, a := range bd.Apps {
			a.Bus = r.bus.DisplayName()
			d.Apps = append(d.Apps, a)
		}
	}
	for _, m := range f.orphanMappings() {
		d.Apps = append(d.Apps, DashboardApp{Mapping: m, History: []Sample{}, Decisions: []ScaleMark{}})
	}
	d.DLQError = strings.Join(dlqErrs, "; ")
	sort.SliceStable(d.Apps, func(i, j int) bool { return mappingLess(d.Apps[i].Mapping, d.Apps[j].Mapping) })
	return d
}

func (f *fleet) dashboardAsked(at time.Time) {
	for _, r := range f.scalers() {
		r.sc.dashboardAsked(at)
	}
}

func (f *fleet) deadLetterJS(appGUID string) (jetstream.JetStream, error) {
	for _, r := range f.scalers() {
		if r.sc.serves(appGUID) {
			return r.sc.js, nil
		}
	}
	return nil, fmt.Errorf("app %s is not mapped in any bus", appGUID)
}

func (f *fleet) gatherer() prometheus.Gatherer { return fleetGatherer{f} }

func mappingLess(a, b api.Mapping) bool {
	if a.AppName != b.AppName {
		return a.AppName < b.AppName
	}
	return a.AppGUID < b.AppGUID
}

func sortMappings(ms []api.Mapping) {
	sort.Slice(ms, func(i, j int) bool { return mappingLess(ms[i], ms[j]) })
}
