package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are bound to their labels once, so the hot path only adds.
type metrics struct {
	reg *prometheus.Registry

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
	f := func(c prometheus.Collector) { reg.MustRegister(c) }

	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hottopic_sidecar_deliveries_total",
		Help: "Delivery attempts by outcome: success (2xx, acked), retry (nak with backoff), dead_letter, released (nak'd at shutdown or topic removal).",
	}, []string{"outcome"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hottopic_sidecar_delivery_duration_seconds",
		Help:    "Time from sending an event to the app until its answer.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hottopic_sidecar_in_flight",
		Help: "Deliveries waiting for the app's answer.",
	})
	redeliveries := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hottopic_sidecar_redeliveries_total",
		Help: "Deliveries of events already delivered before (attempt > 1).",
	})
	dead := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hottopic_sidecar_dead_letters_total",
		Help: "Events dead-lettered: rejected (4xx) or exhausted (max-deliver reached).",
	}, []string{"reason"})
	pubs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hottopic_sidecar_publishes_total",
		Help: "Events published through the sidecar: source api (POST /publish) or output (app response to the output topic).",
	}, []string{"source", "result"})
	for _, c := range []prometheus.Collector{deliveries, latency, inFlight, redeliveries, dead, pubs} {
		f(c)
	}
	return &metrics{
		reg:          reg,
		succeeded:    deliveries.WithLabelValues("success"),
		retried:      deliveries.WithLabelValues("retry"),
		deadLettered: deliveries.WithLabelValues("dead_letter"),
		released:     deliveries.WithLabelValues("released"),
		latency:      latency,
		inFlight:     inFlight,
		redeliveries: redeliveries,
		dlqRejected:  dead.WithLabelValues("rejected"),
		dlqExhausted: dead.WithLabelValues("exhausted"),
		pubAPIOK:     pubs.WithLabelValues("api", "ok"),
		pubAPIErr:    pubs.WithLabelValues("api", "error"),
		pubOutOK:     pubs.WithLabelValues("output", "ok"),
		pubOutErr:    pubs.WithLabelValues("output", "error"),
	}
}
