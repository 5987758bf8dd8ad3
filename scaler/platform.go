package scaler

import "context"

// App is a mapped app as its platform reports it.
type App struct {
	GUID        string
	Name        string
	Annotations map[string]string
	// SpaceGUID names the app's space, when the platform has spaces: in
	// broker mode an app without a binding is told the buses of its space.
	SpaceGUID string
}

// Platform is where apps run: Cloud Foundry, or the dev runtime's local supervisor.
type Platform interface {
	// MappedApps lists every app labelled hottopic.io/mapped=true (all pages).
	MappedApps(ctx context.Context) ([]App, error)
	// Instances is the desired instance count of the app's web process.
	Instances(ctx context.Context, appGUID string) (int, error)
	// Scale sets the desired instance count of the app's web process.
	Scale(ctx context.Context, appGUID string, instances int) error
}
