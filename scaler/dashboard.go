package scaler

// The dashboard: GET / is one embedded page (dashboard/index.html: no
// network at run time, SVG drawn by the page) that polls GET /v1/dashboard
// every second. The scaler keeps, per app, the last 15 minutes of lag and
// instances (a sample when a value changes) and its scale decisions; while a
// dashboard is open (asked within the last minute) it also reads delivery
// rates (one consumer info per busy topic per poll) and counts dead letters
// (the dead-letter stream, every 5 s).

import (
	"context"
	_ "embed"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler/api"
)

//go:embed dashboard/index.html
var dashboardHTML []byte

const (
	historyWindow   = 15 * time.Minute
	dashboardActive = time.Minute     // a dashboard asked this recently: read rates and dead letters
	dlqRecount      = 5 * time.Second // dead letters are counted this often while one is open
)

// Sample is one point of an app's history: [unix ms, lag, current,
// desired], an instance count not known as -1.
type Sample [4]int64

// ScaleMark is one scale decision on the chart.
type ScaleMark struct {
	Time      int64  `json:"t"` // unix ms
	Instances int    `json:"instances"`
	Reason    string `json:"reason"`
}

// DashboardApp is one app as GET /v1/dashboard shows it.
type DashboardApp struct {
	api.Mapping
	DeadLetters     int         `json:"dead_letters"`
	EventsPerSecond float64     `json:"events_per_second"` // first deliveries, over the last poll
	History         []Sample    `json:"history"`
	Decisions       []ScaleMark `json:"decisions"`
}

// Dashboard is the body of GET /v1/dashboard.
type Dashboard struct {
	Now      int64          `json:"now"`
	WindowMS int64          `json:"window_ms"`
	Leader   bool           `json:"leader"`
	Instance string         `json:"instance"`
	DLQError string         `json:"dead_letters_error,omitempty"`
	Apps     []DashboardApp `json:"apps"`
}

type appHistory struct {
	samples   []Sample
	decisions []ScaleMark
	lastScale time.Time
	readings  []reading // delivered events over the last rateWindow
	rate      float64
}

// reading is the sum of an app's consumers' delivered stream sequences.
type reading struct {
	at    time.Time
	total uint64
}

// rateWindow smooths events/s over a few polls.
const rateWindow = 5 * time.Second

type dashboardState struct {
	mu      sync.Mutex
	apps    map[string]*appHistory
	dlq     map[string]int
	dlqAt   time.Time
	dlqErr  string
	askedAt atomic.Int64 // unix nanos of the last GET /v1/dashboard
}

func dashboardRoutes(mux *http.ServeMux, s source) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:")
		_, _ = w.Write(dashboardHTML)
	})
	mux.HandleFunc("GET /v1/dashboard", func(w http.ResponseWriter, r *http.Request) {
		s.dashboardAsked(time.Now())
		d, v := s.Dashboard(), ViewerFrom(r.Context())
		apps := make([]DashboardApp, 0, len(d.Apps))
		for _, a := range d.Apps {
			if v.Sees(a.AppGUID) {
				apps = append(apps, a)
			}
		}
		d.Apps = apps
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("GET /v1/dead-letters", func(w http.ResponseWriter, r *http.Request) {
		guid := r.URL.Query().Get("app")
		if guid == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "app (the app's GUID) is required"})
			return
		}
		if !ViewerFrom(r.Context()).Sees(guid) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "app " + guid + " is not a mapped app your token may see"})
			return
		}
		js, err := s.deadLetterJS(guid)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		letters, err := ops.List(ctx, js, ops.Filter{App: guid, Topic: r.URL.Query().Get("topic")})
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		if len(letters) > 200 {
			letters = letters[:200]
		}
		for i := range letters {
			letters[i].Header = nil // the list: reason and size; `hottopic dead-letter` shows one whole
		}
		writeJSON(w, http.StatusOK, map[string]any{"app_guid": guid, "dead_letters": letters})
	})
}

// Dashboard is what GET /v1/dashboard answers.
func (s *Scaler) Dashboard() Dashboard {
	st := s.Status()
	now := time.Now()
	d := Dashboard{Now: now.UnixMilli(), WindowMS: historyWindow.Milliseconds(), Leader: st.Leader, Instance: st.Instance, Apps: make([]DashboardApp, 0, len(st.Mappings))}
	s.dash.mu.Lock()
	defer s.dash.mu.Unlock()
	d.DLQError = s.dash.dlqErr
	for _, m := range st.Mappings {
		a := DashboardApp{Mapping: m, History: []Sample{}, Decisions: []ScaleMark{}}
		if h := s.dash.apps[m.AppGUID]; h != nil {
			a.History = append(a.History, h.samples...)
			a.Decisions = append(a.Decisions, h.decisions...)
			a.EventsPerSecond = h.rate
		}
		// What changed since the last sample is shown too: the table and
		// the chart of one answer always agree.
		if n := len(a.History); n == 0 || a.History[n-1][1] != m.Lag || a.History[n-1][2] != count(m.CurrentInstances) || a.History[n-1][3] != count(m.DesiredInstances) {
			a.History = append(a.History, Sample{now.UnixMilli(), m.Lag, count(m.CurrentInstances), count(m.DesiredInstances)})
		}
		if t := m.LastScaleTime; t != nil && (len(a.Decisions) == 0 || t.UnixMilli() > a.Decisions[len(a.Decisions)-1].Time) {
			a.Decisions = append(a.Decisions, ScaleMark{Time: t.UnixMilli(), Instances: int(count(m.DesiredInstances)), Reason: m.LastScaleReason})
		}
		a.DeadLetters = s.dash.dlq[m.AppGUID]
		d.Apps = append(d.Apps, a)
	}
	return d
}

// recordLoop samples every app once per poll interval.
func (s *Scaler) recordLoop(ctx context.Context) {
	t := time.NewTicker(s.o.poll)
	defer t.Stop()
	for {
		s.record(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Scaler) record(ctx context.Context, now time.Time) {
	st := s.Status()
	active := now.Sub(time.Unix(0, s.dash.askedAt.Load())) < dashboardActive
	cut := now.Add(-historyWindow).UnixMilli()
	s.dash.mu.Lock()
	if s.dash.apps == nil {
		s.dash.apps = map[string]*appHistory{}
	}
	seen := map[string]bool{}
	var busy []string
	for _, m := range st.Mappings {
		seen[m.AppGUID] = true
		h := s.dash.apps[m.AppGUID]
		if h == nil {
			h = &appHistory{}
			s.dash.apps[m.AppGUID] = h
		}
		smp := Sample{now.UnixMilli(), m.Lag, count(m.CurrentInstances), count(m.DesiredInstances)}
		if n := len(h.samples); n == 0 || h.samples[n-1][1] != smp[1] || h.samples[n-1][2] != smp[2] || h.samples[n-1][3] != smp[3] {
			h.samples = append(h.samples, smp)
		}
		// Keep one sample older than the window: the value at its start.
		i := sort.Search(len(h.samples), func(i int) bool { return h.samples[i][0] >= cut })
		if i > 1 {
			h.samples = append(h.samples[:0], h.samples[i-1:]...)
		}
		if m.LastScaleTime != nil && m.LastScaleTime.After(h.lastScale) {
			h.lastScale = *m.LastScaleTime
			h.decisions = append(h.decisions, ScaleMark{Time: m.LastScaleTime.UnixMilli(), Instances: int(count(m.DesiredInstances)), Reason: m.LastScaleReason})
		}
		j := sort.Search(len(h.decisions), func(i int) bool { return h.decisions[i].Time >= cut })
		h.decisions = append(h.decisions[:0], h.decisions[j:]...)
		if active && (m.Lag > 0 || h.rate > 0 || len(h.readings) == 0) {
			busy = append(busy, m.AppGUID)
		}
	}
	for guid := range s.dash.apps {
		if !seen[guid] {
			delete(s.dash.apps, guid)
		}
	}
	recount := active && now.Sub(s.dash.dlqAt) >= dlqRecount
	s.dash.mu.Unlock()

	if active {
		topics := map[string][]string{}
		for _, m := range st.Mappings {
			topics[m.AppGUID] = m.Topics
		}
		for _, guid := range busy {
			s.readRate(ctx, now, guid, topics[guid])
		}
	}
	if recount {
		s.countDeadLetters(ctx, now)
	}
}

// readRate reads the app's consumers' delivered stream sequences and turns
// their progress over the last rateWindow into events per second.
func (s *Scaler) readRate(ctx context.Context, now time.Time, guid string, topics []string) {
	var total uint64
	for _, t := range topics {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := s.js.Consumer(rctx, topic.StreamName(t), topic.ConsumerName(guid))
		cancel()
		if err != nil {
			return // unknown now: keep the last rate
		}
		total += c.CachedInfo().Delivered.Stream
	}
	s.dash.mu.Lock()
	defer s.dash.mu.Unlock()
	h := s.dash.apps[guid]
	if h == nil {
		return
	}
	h.readings = append(h.readings, reading{at: now, total: total})
	i := 0
	for i < len(h.readings)-2 && now.Sub(h.readings[i+1].at) >= rateWindow {
		i++
	}
	h.readings = append(h.readings[:0], h.readings[i:]...)
	first := h.readings[0]
	h.rate = 0
	if dt := now.Sub(first.at).Seconds(); dt > 0 && total > first.total {
		h.rate = float64(total-first.total) / dt
	}
}

func (s *Scaler) countDeadLetters(ctx context.Context, now time.Time) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	letters, err := ops.List(lctx, s.js, ops.Filter{})
	s.dash.mu.Lock()
	defer s.dash.mu.Unlock()
	s.dash.dlqAt = now
	if err != nil {
		s.dash.dlqErr = "dead letters unreadable: " + err.Error()
		return
	}
	s.dash.dlqErr = ""
	counts := map[string]int{}
	for _, l := range letters {
		counts[l.App]++
	}
	s.dash.dlq = counts
}

// DashboardPage is the dashboard's page, for `hottopic dashboard` to serve
// on 127.0.0.1 in front of a scaler.
func DashboardPage() []byte { return dashboardHTML }

// count is an instance count, -1 when not known.
func count(n *int) int64 {
	if n == nil {
		return -1
	}
	return int64(*n)
}
