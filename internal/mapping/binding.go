package mapping

import (
	"fmt"
	"strings"
)

// NoBinding is the one wording, shared by `map-event` and the scaler, of a
// mapped app that holds no Hot Topic service binding (so no credentials to
// consume with). buses names the hottopic service instances the app could be
// bound to (its space's), when the caller knows them.
func NoBinding(app string, buses []string) error {
	switch len(buses) {
	case 0:
		return fmt.Errorf("app %s has no hottopic service binding: run cf create-service hottopic standard BUS, then cf bind-service %s BUS", app, app)
	case 1:
		return fmt.Errorf("app %s has no hottopic service binding: run cf bind-service %s %s", app, app, buses[0])
	default:
		return fmt.Errorf("app %s has no hottopic service binding: run cf bind-service %s BUS, BUS one of %s", app, app, strings.Join(buses, ", "))
	}
}
