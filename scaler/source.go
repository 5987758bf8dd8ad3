package scaler

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hottopic-io/hottopic/scaler/api"
)

// source is what the HTTP API shows: one Scaler (one bus), or the fleet that
// serves every bus of a service broker (fleet.go).
type source interface {
	Status() api.Mappings
	Health() Health
	Dashboard() Dashboard
	gatherer() prometheus.Gatherer
	// dashboardAsked says a dashboard is open (rates and dead letters are
	// read while one is).
	dashboardAsked(at time.Time)
	// deadLetterJS is the JetStream holding the app's dead letters.
	deadLetterJS(appGUID string) (jetstream.JetStream, error)
}

func (s *Scaler) gatherer() prometheus.Gatherer { return s.metrics.reg }

func (s *Scaler) dashboardAsked(at time.Time) { s.dash.askedAt.Store(at.UnixNano()) }

func (s *Scaler) deadLetterJS(string) (jetstream.JetStream, error) { return s.js, nil }

// serves says whether the app is one of this scaler's mapped apps.
func (s *Scaler) serves(appGUID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apps[appGUID] != nil
}
