package sidecar

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are labelled by topic (an app may be mapped to several). Each
// topic's series are bound to their labels once, the first time the topic is
// seen, so the hot path is a map read and an add.
type metrics struct {
	reg *prometheus.Registry

	deliveries, dead, pubs *prometheus.CounterVec
	redeliveries           *prometheus.CounterVec
	latency                *prometheus.HistogramVec
	inFlight               *prometheus.GaugeVec
	byTopic                sync.Map // topic → *topicMetrics
	newTopicMu             sync.Mutex
}

// topicMetrics are one topic's series.
type topicMetrics struct {
	succeeded, retried, deadLettered, released prometheus.Counter
	latency                                    prometheus.Observer
	inFlight                                   prometheus.Gauge
	redeliveries                               prometheus.Counter
	dlqRejected, dlqExhausted                  prometheus.Counter
	pubAPIOK, pubAPIErr, pubOutOK, pubOutErr   prometheus.Counter
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{reg: reg}
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hottopic_sidecar_deliveries_total",
		Help: "Delivery attempts by topic and outcome: success (2xx, acked), retry (nak with backoff), dead_letter, released (nak'd at shutdown or topic removal).",
	}, []string{"topic", "outcome"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hottopic_sidecar_delivery_duration_seconds",
		Help:    "Time from sending an event to the app until its answer, by topic.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"topic"})
	m.inFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hottopic_sidecar_in_flight",
		Help: "Deliveries waiting for the app's answer, by topic.",
	}, []string{"topic"})
	m.redeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hottopic_sidecar_redeliveries_total",
		Help: "Deliveries of events already delivered before (attempt > 1), by topic.",
	}, []string{"topic"})
	m.dead = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hottopic_sidecar_dead_letters_total",
		Help: "Events dead-lettered, by topic: rejected (4xx) or exhausted (max-deliver reached).",
	}, []string{"topic", "reason"})
	m.pubs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hottopic_sidecar_publishes_total",
		Help: "Events published through the sidecar, by topic published to: source api (POST /publish) or output (app response to the output topic).",
	}, []string{"topic", "source", "result"})
	for _, c := range []prometheus.Collector{m.deliveries, m.latency, m.inFlight, m.redeliveries, m.dead, m.pubs} {
		reg.MustRegister(c)
	}
	return m
}

// topic returns t's series, creating them (at zero) the first time.
func (m *metrics) topic(t string) *topicMetrics {
	if v, ok := m.byTopic.Load(t); ok {
		return v.(*topicMetrics)
	}
	m.newTopicMu.Lock()
	defer m.newTopicMu.Unlock()
	if v, ok := m.byTopic.Load(t); ok {
		return v.(*topicMetrics)
	}
	tm := &topicMetrics{
		succeeded:    m.deliveries.WithLabelValues(t, "success"),
		retried:      m.deliveries.WithLabelValues(t, "retry"),
		deadLettered: m.deliveries.WithLabelValues(t, "dead_letter"),
		released:     m.deliveries.WithLabelValues(t, "released"),
		latency:      m.latency.WithLabelValues(t),
		inFlight:     m.inFlight.WithLabelValues(t),
		redeliveries: m.redeliveries.WithLabelValues(t),
		dlqRejected:  m.dead.WithLabelValues(t, "rejected"),
		dlqExhausted: m.dead.WithLabelValues(t, "exhausted"),
		pubAPIOK:     m.pubs.WithLabelValues(t, "api", "ok"),
		pubAPIErr:    m.pubs.WithLabelValues(t, "api", "error"),
		pubOutOK:     m.pubs.WithLabelValues(t, "output", "ok"),
		pubOutErr:    m.pubs.WithLabelValues(t, "output", "error"),
	}
	m.byTopic.Store(t, tm)
	return tm
}
