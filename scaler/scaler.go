// Package scaler keeps JetStream in line with the event mappings found on a
// Platform (Cloud Foundry, or the dev runtime's supervisor) and scales each
// mapped app's web process by its queue length, down to zero.
//
// Any number of scalers may run; the one holding the leader key in a
// JetStream KV bucket reconciles, scales and dead-letters, the others only
// observe (and serve the same status) so that they can take over warm.
package scaler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// Scaler reconciles and scales. Create it with New, start it with Run.
type Scaler struct {
	js      jetstream.JetStream
	p       Platform
	o       options
	log     *slog.Logger
	api     *jsAPI
	lag     *lagReader
	metrics *metrics

	leader     atomic.Bool
	discoverCh chan struct{} // asks for a discovery (and reconcile) now

	mu            sync.Mutex
	apps          map[string]*appState // by app GUID, from the last good discovery
	discovered    bool                 // a discovery has succeeded
	discoveryErr  string
	lagErr        string
	lastPoll      time.Time
	platformState string // last platform error, logged on change only
	streamTopics  map[string]string
	rec           *reconciler // leader's view of the KV; nil when not leading
	electionErr   string      // why this scaler cannot take part in the election
	prepareErr    string      // why the leader cannot load or recreate the mapping bucket
	deadLetterErr string      // why the leader cannot drain advisories

	dash dashboardState // history for the dashboard (dashboard.go)
}

// appState is everything the scaler knows about one mapped app.
type appState struct {
	app     App
	m       mapping.Mapping
	invalid error // the annotations could not be resolved; m is then the last one applied, if any
	policy  Policy

	lag          int64
	lagKnown     bool
	current      int
	currentKnown bool
	desired      int
	settled      bool // idle at its resting count: skip until something changes
	recheck      bool // read the current count again even if settled
	dirty        bool // a stream or consumer is missing: reconcile again

	lastScale  time.Time
	lastReason string
	errors     map[string]string // kind (nats, platform, reconcile) → last error
	failures   int
	retryAt    time.Time
}

// inEffect says whether a mapping stands for the app: its valid one, or
// the one last applied while its annotations are invalid.
func (st *appState) inEffect() bool { return len(st.m.Topics) > 0 }

// New makes a scaler on JetStream js and platform p.
func New(js jetstream.JetStream, p Platform, opts ...Option) *Scaler {
	o := newOptions(opts)
	api := newJSAPI(js)
	s := &Scaler{
		js:           js,
		p:            p,
		o:            o,
		log:          o.logger,
		api:          api,
		lag:          newLagReader(api, o.poll),
		discoverCh:   make(chan struct{}, 1),
		apps:         map[string]*appState{},
		streamTopics: map[string]string{},
	}
	s.metrics = newMetrics(s)
	return s
}

func defaultInstanceID() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// InstanceID is this scaler's name in the leader election.
func (s *Scaler) InstanceID() string { return s.o.instanceID }

// Leader reports whether this scaler currently leads.
func (s *Scaler) Leader() bool { return s.leader.Load() }

// Run discovers, reconciles, polls and scales until ctx is done. NATS or the
// platform being unreachable is not an error: the scaler waits, leaving apps
// as they are, and carries on when they are back.
func (s *Scaler) Run(ctx context.Context) error {
	s.log.Info("scaler starting", "instance", s.o.instanceID,
		"poll_interval", s.o.poll.String(), "discovery_interval", s.o.discovery.String())
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(s.elect)
	run(s.discoverLoop)
	run(s.pollLoop)
	run(s.deadLetterLoop)
	run(s.recordLoop)
	wg.Wait()
	s.log.Info("scaler stopped", "instance", s.o.instanceID)
	return nil
}

func (s *Scaler) discoverLoop(ctx context.Context) {
	t := time.NewTicker(s.o.discovery)
	defer t.Stop()
	for {
		s.discover(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.discoverCh:
		}
	}
}

// requestDiscovery asks the discovery loop to run now (on leadership, or when
// a stream or consumer went missing).
func (s *Scaler) requestDiscovery() {
	select {
	case s.discoverCh <- struct{}{}:
	default:
	}
}

// discover reads the mapped apps from the platform and, when leading,
// reconciles JetStream with them.
func (s *Scaler) discover(ctx context.Context) {
	start := s.o.now()
	apps, err := s.p.MappedApps(ctx)
	s.metrics.discoveries.Inc()
	if err != nil {
		if ctx.Err() == nil {
			s.discoveryFailed(err)
		}
		return
	}
	s.mu.Lock()
	if s.discoveryErr != "" {
		s.log.Info("discovery works again")
		s.discoveryErr = ""
	}
	rec := s.rec
	seen := make(map[string]bool, len(apps))
	for _, a := range apps {
		if a.GUID == "" || seen[a.GUID] {
			continue
		}
		seen[a.GUID] = true
		st := s.apps[a.GUID]
		if st == nil {
			st = &appState{errors: map[string]string{}}
			s.apps[a.GUID] = st
		}
		s.updateApp(st, a, rec)
	}
	for guid := range s.apps {
		if !seen[guid] {
			delete(s.apps, guid)
		}
	}
	s.discovered = true
	s.streamTopics = map[string]string{}
	for _, st := range s.apps {
		for _, t := range st.m.Topics {
			s.streamTopics[topic.StreamName(t)] = t
		}
	}
	s.mu.Unlock()
	s.metrics.discoverySeconds.Observe(s.o.now().Sub(start).Seconds())
	if rec != nil && s.leader.Load() {
		if rec = s.checkReconciler(ctx, rec); rec != nil {
			s.reconcile(ctx, rec)
		}
	}
}

// discoveryFailed records a failed discovery, logging it once per new error.
func (s *Scaler) discoveryFailed(err error) {
	s.metrics.discoveryErrors.Inc()
	s.mu.Lock()
	changed := s.discoveryErr != err.Error()
	s.discoveryErr = err.Error()
	s.mu.Unlock()
	if changed {
		s.log.Warn("discovery failed; mappings stay as they are", "error", err)
	}
}

// updateApp resolves app a's annotations into st (s.mu held). rec, when
// leading, knows the mapping last applied.
func (s *Scaler) updateApp(st *appState, a App, rec *reconciler) {
	st.app = a
	if unknown := strings.Join(mapping.UnknownAnnotations(a.Annotations), "; "); unknown != st.errors["annotations"] {
		if unknown == "" {
			delete(st.errors, "annotations")
		} else {
			st.errors["annotations"] = unknown
			s.log.Warn("mapping has annotations Hot Topic does not know; they are ignored", "app", a.Name, "app_guid", a.GUID, "warning", unknown)
		}
	}
	m, err := mapping.FromMetadata(a.GUID, a.Name, a.Annotations)
	if err == nil {
		err = topic.ValidConsumerName(a.GUID)
	}
	if err != nil {
		if st.invalid == nil || st.invalid.Error() != err.Error() {
			s.log.Warn("invalid mapping; left as it was", "app", a.Name, "app_guid", a.GUID, "error", err)
		}
		st.invalid = err
		// "Left as it was": the mapping last applied stays in effect —
		// streams, consumers, KV key and scaling — so a typo never
		// strands queued events at zero instances.
		if len(st.m.Topics) == 0 && rec != nil {
			if have := rec.applied[a.GUID]; len(have.Topics) > 0 {
				st.m = have
			}
		}
		return
	}
	if st.invalid != nil {
		s.log.Info("mapping valid again", "app", a.Name, "app_guid", a.GUID)
	}
	st.invalid = nil
	st.m = m
	st.recheck = true
}

// snapshotForReconcile is what the KV should hold (every valid mapping),
// which apps are mapped at all, and which need their objects checked again.
func (s *Scaler) snapshotForReconcile() (valid map[string]mapping.Mapping, present map[string]bool, dirty map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	valid = make(map[string]mapping.Mapping, len(s.apps))
	present = make(map[string]bool, len(s.apps))
	dirty = map[string]bool{}
	for guid, st := range s.apps {
		present[guid] = true
		if st.invalid == nil {
			valid[guid] = st.m
			if st.dirty {
				dirty[guid] = true
			}
		}
	}
	return valid, present, dirty
}

func (s *Scaler) setError(guid, kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.apps[guid]
	if st == nil {
		return
	}
	if err == nil {
		delete(st.errors, kind)
		return
	}
	st.errors[kind] = err.Error()
}

func (s *Scaler) clearDirty(guid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.apps[guid]; st != nil {
		st.dirty = false
	}
}

// pollLoop reads lag and scales every poll interval (start to start), and
// at once when a hint says an idle topic got an event (at most ten times per
// interval).
func (s *Scaler) pollLoop(ctx context.Context) {
	defer s.lag.hints.stop()
	t := time.NewTicker(s.o.poll)
	defer t.Stop()
	sweep := true
	for {
		s.poll(ctx, sweep)
		last := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sweep = true
		case <-s.lag.hints.poke:
			sweep = false
			if wait := s.o.poll/10 - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
	}
}

type evalItem struct {
	guid string
	name string
	s    mapping.Settings
}

// poll reads the lag of every mapping in effect (sweep: with this cycle's
// share of the stream list), feeds it to each app's policy, and evaluates
// the apps whose lag is not idle at rest.
func (s *Scaler) poll(ctx context.Context, sweep bool) {
	start := s.o.now()
	cpu0 := processCPU()
	req0 := s.api.requests.Load()

	watch, ok := s.watched()
	if !ok {
		return
	}
	lg, err := s.lag.read(ctx, watch, sweep)
	if ctx.Err() != nil {
		return
	}
	evals, missing := s.observe(s.o.now(), lg, err)
	if missing && s.leader.Load() {
		s.requestDiscovery()
	}

	sort.Slice(evals, func(i, j int) bool { return evals[i].name < evals[j].name })
	for _, e := range evals {
		if ctx.Err() != nil {
			return
		}
		s.evaluate(ctx, e)
	}
	s.metrics.pollSeconds.Observe(s.o.now().Sub(start).Seconds())
	s.metrics.pollCPUSeconds.Observe((processCPU() - cpu0).Seconds())
	s.metrics.pollRequests.Observe(float64(s.api.requests.Load() - req0))
	s.metrics.consumerReads.Add(float64(s.lag.reads))
}

// watched is the topic of every stream a mapping reads (stream name →
// topic); false before the first discovery.
func (s *Scaler) watched() (map[string]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.discovered {
		return nil, false
	}
	watch := make(map[string]string, len(s.streamTopics))
	for name, t := range s.streamTopics {
		watch[name] = t
	}
	watchRedrive(watch)
	return watch, true
}

// observe records one lag reading (err: none could be made) for every app,
// and returns the apps to evaluate and whether a stream or consumer was
// found missing.
func (s *Scaler) observe(now time.Time, lg lags, err error) (evals []evalItem, missing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.metrics.pollErrors.Inc()
		if s.lagErr != err.Error() {
			s.log.Warn("lag unreadable; apps stay as they are", "error", err)
		}
		s.lagErr = err.Error()
	} else if s.lagErr != "" {
		s.log.Info("lag readable again")
		s.lagErr = ""
	}
	for guid, st := range s.apps {
		if !st.inEffect() {
			continue
		}
		lag, known := int64(0), err == nil
		var flow Flow
		for _, t := range st.m.Topics {
			if !known {
				break
			}
			l, ok, miss := lg.consumerLag(topic.StreamName(t), guid)
			if miss {
				st.dirty, missing = true, true
			}
			known = known && ok
			lag += l
			inFlight, arrived := lg.consumerFlow(topic.StreamName(t), guid)
			flow.InFlight += inFlight
			flow.Arrived += arrived
		}
		if !known {
			if st.lagKnown || len(st.policy.window) > 0 {
				st.policy.Unknown()
			}
			st.lagKnown, st.settled = false, false
			if err != nil {
				st.errors["nats"] = "lag unreadable: " + err.Error()
			} else {
				st.errors["nats"] = "lag unreadable: a stream or consumer is missing (being reconciled)"
			}
			continue
		}
		delete(st.errors, "nats")
		lag += redriveLag(lg, guid, st.m.Topics)
		st.lag, st.lagKnown = lag, true
		if st.settled && lag == 0 && !st.recheck {
			continue // idle at rest: costs nothing this cycle
		}
		st.policy.ObserveFlow(now, lag, flow, st.m.Settings)
		evals = append(evals, evalItem{guid: guid, name: st.app.Name, s: st.m.Settings})
	}
	s.lastPoll = now
	return evals, missing
}

// evaluate reads the app's current count, decides, and (when leading) scales.
func (s *Scaler) evaluate(ctx context.Context, e evalItem) {
	cur, err := s.p.Instances(ctx, e.guid)
	now := s.o.now()
	s.mu.Lock()
	st := s.apps[e.guid]
	if st == nil || !st.inEffect() {
		s.mu.Unlock()
		return
	}
	if err != nil {
		st.currentKnown, st.settled = false, false
		st.errors["platform"] = "instances unreadable: " + err.Error()
		s.mu.Unlock()
		s.platformError(err)
		return
	}
	delete(st.errors, "platform")
	s.platformOK()
	st.current, st.currentKnown, st.recheck = cur, true, false
	d := st.policy.Decide(now, cur, e.s)
	st.desired = d.Target
	st.settled = d.Target == cur && st.lag == 0 && d.Wanted == cur
	if d.Target == cur || !s.leader.Load() || now.Before(st.retryAt) {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()

	err = s.p.Scale(ctx, e.guid, d.Target)
	now = s.o.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st = s.apps[e.guid]
	if st == nil {
		return
	}
	if err != nil {
		st.failures++
		st.retryAt = now.Add(backoff(st.failures))
		st.errors["scale"] = fmt.Sprintf("scale %d → %d failed: %v", cur, d.Target, err)
		s.metrics.scaleErrors.Inc()
		s.log.Warn("scale failed; will retry", "app", e.name, "app_guid", e.guid,
			"from", cur, "to", d.Target, "retry_in", backoff(st.failures).String(), "error", err)
		return
	}
	delete(st.errors, "scale")
	st.failures, st.retryAt = 0, time.Time{}
	st.current, st.lastScale, st.lastReason = d.Target, now, d.Reason
	st.settled = d.Target == d.Wanted && st.lag == 0
	dir := "up"
	if d.Target < cur {
		dir = "down"
	}
	s.metrics.scales.WithLabelValues(dir).Inc()
	s.log.Info(fmt.Sprintf("scaled %s %d → %d: %s", e.name, cur, d.Target, d.Reason),
		"app", e.name, "app_guid", e.guid, "from", cur, "to", d.Target, "lag", d.Lag)
}

func backoff(failures int) time.Duration {
	d := time.Second << min(failures-1, 6)
	return min(d, time.Minute)
}

func (s *Scaler) platformError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.platformState != err.Error() {
		s.platformState = err.Error()
		s.log.Warn("platform unreachable; apps stay as they are", "error", err)
	}
}

func (s *Scaler) platformOK() {
	// called with s.mu held
	if s.platformState != "" {
		s.platformState = ""
		s.log.Info("platform reachable again")
	}
}

func sortedErrors(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+": "+v)
	}
	sort.Strings(out)
	return out
}
