package scaler

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler/api"
)

// Handler serves GET /v1/mappings, /healthz, /metrics and the dashboard.
// It checks no credentials: Service puts Access.Protect in front of it, and
// the app data it renders is filtered by the request's Viewer.
func (s *Scaler) Handler() http.Handler { return apiHandler(s) }

// apiHandler serves one bus's Scaler or, in broker mode, the fleet of them.
func apiHandler(s source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.Path, func(w http.ResponseWriter, r *http.Request) {
		st := s.Status()
		st.Mappings = visibleMappings(st.Mappings, ViewerFrom(r.Context()))
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		h := s.Health()
		if !ViewerFrom(r.Context()).all {
			h = h.withoutDetails()
		}
		writeJSON(w, http.StatusOK, h)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer(), promhttp.HandlerOpts{}))
	dashboardRoutes(mux, s)
	return mux
}

// visibleMappings keeps the mappings of the apps v may see.
func visibleMappings(ms []api.Mapping, v Viewer) []api.Mapping {
	out := make([]api.Mapping, 0, len(ms))
	for _, m := range ms {
		if v.Sees(m.AppGUID) {
			out = append(out, m)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Health is the body of GET /healthz. The scaler answers 200 whenever it runs:
// NATS or platform outages are reported here but are not a reason for the
// platform to restart it. Status is "ok", or "degraded" when something keeps
// this scaler from leading, reconciling, dead-lettering or scaling; Problems
// then says what, one line each.
type Health struct {
	Status        string    `json:"status"`
	Problems      []string  `json:"problems"`
	Instance      string    `json:"instance"`
	Leader        bool      `json:"leader"`
	NATSConnected bool      `json:"nats_connected"`
	LastPoll      time.Time `json:"last_poll,omitzero"`
	LeaderError   string    `json:"leader_error,omitempty"`
	LagError      string    `json:"lag_error,omitempty"`
	DiscoveryErr  string    `json:"discovery_error,omitempty"`
	PlatformError string    `json:"platform_error,omitempty"`

	// Buses is each bus served, in broker mode.
	Buses []BusHealth `json:"buses,omitempty"`
}

// withoutDetails is the health anyone may read: what is wrong, not the
// error texts, which may name apps, topics and streams of any tenant (the
// scaler's log has them).
func (h Health) withoutDetails() Health {
	h.LeaderError, h.LagError, h.DiscoveryErr, h.PlatformError = "", "", "", ""
	problems := make([]string, 0, len(h.Problems))
	for _, p := range h.Problems {
		kind, _, _ := strings.Cut(p, " (")
		problems = append(problems, kind)
	}
	h.Problems = problems
	if h.Buses != nil { // broker mode: each bus's problems alike
		buses := make([]BusHealth, len(h.Buses))
		for i, b := range h.Buses {
			b.Problems = Health{Problems: b.Problems}.withoutDetails().Problems
			buses[i] = b
		}
		h.Buses = buses
	}
	return h
}

// Health reports what /healthz serves.
func (s *Scaler) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := Health{
		Status:        "ok",
		Problems:      []string{},
		Instance:      s.o.instanceID,
		Leader:        s.leader.Load(),
		NATSConnected: s.api.nc.IsConnected(),
		LastPoll:      s.lastPoll,
		LagError:      s.lagErr,
		DiscoveryErr:  s.discoveryErr,
		PlatformError: s.platformState,
	}
	add := func(p string) { h.Problems = append(h.Problems, p) }
	if !h.NATSConnected {
		add("NATS not connected")
	}
	switch {
	case s.electionErr != "":
		h.LeaderError = s.electionErr
		add("cannot take part in leader election (" + s.electionErr + ")")
	case h.Leader && s.prepareErr != "":
		h.LeaderError = "leading, but " + s.prepareErr
		add("leading but cannot reconcile mappings (" + s.prepareErr + ")")
	}
	if h.Leader && s.deadLetterErr != "" {
		add("leading but cannot dead-letter (" + s.deadLetterErr + ")")
	}
	if s.lagErr != "" {
		add("lag unreadable (" + s.lagErr + ")")
	}
	if s.discoveryErr != "" {
		add("discovery failed (" + s.discoveryErr + ")")
	}
	if s.platformState != "" {
		add("platform unreachable (" + s.platformState + ")")
	}
	if len(h.Problems) > 0 {
		h.Status = "degraded"
	}
	return h
}

// Status is the body of GET /v1/mappings, sorted by app name.
func (s *Scaler) Status() api.Mappings {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := api.Mappings{Leader: s.leader.Load(), Instance: s.o.instanceID, Mappings: make([]api.Mapping, 0, len(s.apps))}
	for guid, st := range s.apps {
		m := api.Mapping{
			App:             st.app.Name,
			AppGUID:         guid,
			AppName:         st.app.Name,
			Valid:           st.invalid == nil,
			Lag:             st.lag,
			LagKnown:        st.lagKnown,
			LastScaleReason: st.lastReason,
			Errors:          sortedErrors(st.errors),
		}
		if !st.lastScale.IsZero() {
			m.LastScaleTime = new(st.lastScale)
		}
		if st.invalid != nil {
			m.Error = st.invalid.Error()
		}
		if !st.inEffect() {
			m.LagKnown = false
		} else {
			m.Topics = st.m.Topics
			m.Settings = st.m.Settings
			m.Streams = make(map[string]string, len(st.m.Topics))
			for _, t := range st.m.Topics {
				m.Streams[t] = topic.StreamName(t)
			}
		}
		if st.currentKnown {
			m.CurrentInstances, m.DesiredInstances = new(st.current), new(st.desired)
		}
		out.Mappings = append(out.Mappings, m)
	}
	sort.Slice(out.Mappings, func(i, j int) bool {
		a, b := out.Mappings[i], out.Mappings[j]
		if a.AppName != b.AppName {
			return a.AppName < b.AppName
		}
		return a.AppGUID < b.AppGUID
	})
	return out
}

type metrics struct {
	reg              *prometheus.Registry
	discoveries      prometheus.Counter
	discoveryErrors  prometheus.Counter
	discoverySeconds prometheus.Histogram
	pollErrors       prometheus.Counter
	pollSeconds      prometheus.Histogram
	pollCPUSeconds   prometheus.Histogram
	pollRequests     prometheus.Histogram
	consumerReads    prometheus.Counter
	scales           *prometheus.CounterVec
	scaleErrors      prometheus.Counter
	reconcileErrors  prometheus.Counter
	deadLetters      prometheus.Counter
	leaderChanges    prometheus.Counter
}

func newMetrics(s *Scaler) *metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{reg: reg}
	m.discoveries = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_discoveries_total", Help: "Discoveries of mapped apps on the platform."})
	m.discoveryErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_discovery_errors_total", Help: "Discoveries that failed (mappings kept as they were)."})
	m.discoverySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hottopic_scaler_discovery_seconds", Help: "Time to list mapped apps.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)})
	m.pollErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_poll_errors_total", Help: "Poll cycles whose lag could not be read."})
	m.pollSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hottopic_scaler_poll_seconds", Help: "Wall time of one poll cycle (lag read, decisions, scale calls).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	m.pollCPUSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hottopic_scaler_poll_cpu_seconds", Help: "Process CPU time spent during one poll cycle.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	m.pollRequests = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hottopic_scaler_poll_nats_requests", Help: "JetStream API requests per poll cycle.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)})
	m.consumerReads = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_consumer_list_reads_total", Help: "Streams whose consumers were listed (changed or pending)."})
	m.scales = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hottopic_scaler_scale_total", Help: "Scale calls made, by direction."}, []string{"direction"})
	for _, dir := range []string{"up", "down"} {
		m.scales.WithLabelValues(dir) // at 0 from the first scrape, so rate() and alerts see the series
	}
	m.scaleErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_scale_errors_total", Help: "Scale calls that failed."})
	m.reconcileErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_reconcile_errors_total", Help: "Failed stream, consumer or KV changes."})
	m.deadLetters = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_dead_letters_total", Help: "Events dead-lettered from max-deliveries advisories."})
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{Name: "hottopic_scaler_leader_acquired_total", Help: "Times this scaler became leader."})
	for _, c := range []prometheus.Collector{m.discoveries, m.discoveryErrors, m.discoverySeconds, m.pollErrors, m.pollSeconds,
		m.pollCPUSeconds, m.pollRequests, m.consumerReads, m.scales, m.scaleErrors, m.reconcileErrors, m.deadLetters, m.leaderChanges} {
		f(c)
	}
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hottopic_scaler_nats_api_requests_total", Help: "JetStream API requests made by the lag reader."},
		func() float64 { return float64(s.api.requests.Load()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hottopic_scaler_leader", Help: "1 when this scaler leads."},
		func() float64 {
			if s.leader.Load() {
				return 1
			}
			return 0
		}))
	f(appCollector{s})
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// appCollector exports per-app figures from the status at scrape time, so a
// poll cycle never touches metric series of idle apps.
type appCollector struct{ s *Scaler }

var (
	descLag     = prometheus.NewDesc("hottopic_scaler_app_lag", "Pending plus in-flight events over the app's consumers.", []string{"app", "app_guid"}, nil)
	descCurrent = prometheus.NewDesc("hottopic_scaler_app_instances", "Instances the platform reports for the app's web process.", []string{"app", "app_guid"}, nil)
	descDesired = prometheus.NewDesc("hottopic_scaler_app_desired_instances", "Instances the policy wants.", []string{"app", "app_guid"}, nil)
	descValid   = prometheus.NewDesc("hottopic_scaler_app_valid", "1 when the app's mapping annotations are valid.", []string{"app", "app_guid"}, nil)
)

func (c appCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLag
	ch <- descCurrent
	ch <- descDesired
	ch <- descValid
}

func (c appCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.s.Status().Mappings {
		valid := 0.0
		if m.Valid {
			valid = 1
		}
		ch <- prometheus.MustNewConstMetric(descValid, prometheus.GaugeValue, valid, m.AppName, m.AppGUID)
		if m.LagKnown {
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(m.Lag), m.AppName, m.AppGUID)
		}
		if m.CurrentInstances != nil && m.DesiredInstances != nil {
			ch <- prometheus.MustNewConstMetric(descCurrent, prometheus.GaugeValue, float64(*m.CurrentInstances), m.AppName, m.AppGUID)
			ch <- prometheus.MustNewConstMetric(descDesired, prometheus.GaugeValue, float64(*m.DesiredInstances), m.AppName, m.AppGUID)
		}
	}
}
