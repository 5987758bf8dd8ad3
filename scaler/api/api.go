// Package api is the JSON the scaler serves at GET /v1/mappings, shared by
// the scaler (which writes it) and the CLI's `events` (which reads it).
package api

import (
	"time"

	"github.com/hottopic-io/hottopic/internal/mapping"
)

// Path is where the scaler serves the mappings.
const Path = "/v1/mappings"

// Mappings is the response body of GET /v1/mappings.
type Mappings struct {
	// Leader is true when the answering scaler instance is the one scaling.
	Leader   bool      `json:"leader"`
	Instance string    `json:"instance"`
	Mappings []Mapping `json:"mappings"`
}

// Mapping is one app's mapping as the scaler sees it.
type Mapping struct {
	// App is the app's name (docs/design.md's "app"); AppName says the same for
	// clients of the first schema.
	App     string `json:"app"`
	AppGUID string `json:"app_guid"`
	AppName string `json:"app_name"`
	// Bus is the event bus (service instance) the app is bound to, when the
	// scaler serves a service broker's buses: its CF name, else its ID.
	Bus      string            `json:"bus,omitempty"`
	Topics   []string          `json:"topics"`
	Streams  map[string]string `json:"streams"` // topic → JetStream stream name
	Settings mapping.Settings  `json:"settings"`
	// Valid is false when the app's annotations could not be resolved; Error
	// says why and the mapping is left as it was: Topics and Settings are then
	// the ones last applied (still in effect and scaled), empty if none was.
	Valid bool   `json:"valid"`
	Error string `json:"error,omitempty"`
	// Lag is pending + ack pending over the app's consumers; LagKnown is false
	// when it could not be read (then the app is not scaled).
	Lag      int64 `json:"lag"`
	LagKnown bool  `json:"lag_known"`
	// CurrentInstances is what the platform reports for the web process and
	// DesiredInstances what the policy wants; both are null when not known
	// (the scaler has not read the app's instances yet, or could not, or the
	// mapping comes from Cloud Controller alone), never a made-up 0.
	CurrentInstances *int `json:"current_instances"`
	DesiredInstances *int `json:"desired_instances"`
	// LastScaleTime is null and LastScaleReason empty until this scaler
	// scaled the app.
	LastScaleTime   *time.Time `json:"last_scale_time"`
	LastScaleReason string     `json:"last_scale_reason"`
	// Errors are recent operational errors (CC, NATS) for this mapping; an
	// empty list when there are none.
	Errors []string `json:"errors"`
}
