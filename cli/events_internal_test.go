package cli

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler/api"
)

// With a service broker the scaler says which bus serves each app, and
// that a mapped app bound to none is invalid although its annotations are
// fine: events shows both.
func TestEventsShowTheScalersBus(t *testing.T) {
	g := NewWithT(t)
	valid := func(name, guid string) api.Mapping {
		return api.Mapping{AppName: name, AppGUID: guid, Valid: true, Topics: []string{"orders.created"},
			Streams: map[string]string{"orders.created": "HT_orders_created"}, Settings: mapping.Defaults()}
	}
	rows := []api.Mapping{valid("enrich", "g1"), valid("lonely", "g2")}
	reason := mapping.NoBinding("lonely", []string{"orders-bus"}).Error()
	mergeLive(rows, &api.Mappings{Mappings: []api.Mapping{
		{AppGUID: "g1", Valid: true, Bus: "orders-bus", LagKnown: true, Lag: 3, Errors: []string{}},
		{AppGUID: "g2", Valid: false, Error: reason, Errors: []string{}},
	}})
	var out strings.Builder
	writeTable(&out, rows, true)
	g.Expect(out.String()).To(MatchRegexp(`(?m)^name\s+topics\s+streams\s+bus\s+lag\s+instances\s+min/max\s+lag-per-instance\s+status$`))
	g.Expect(out.String()).To(MatchRegexp(`(?m)^enrich\s+orders.created\s+HT_orders_created\s+orders-bus\s+3\s+\?/\?\s+0/10\s+10\s+ok$`))
	g.Expect(out.String()).To(MatchRegexp(`(?m)^lonely\s+orders.created\s+HT_orders_created\s+-\s+\?\s+\?/\?\s+-\s+-\s+invalid: ` + strings.ReplaceAll(reason, ".", `\.`) + `$`))

	// Without a broker there is no bus column.
	out.Reset()
	writeTable(&out, []api.Mapping{valid("enrich", "g1")}, false)
	g.Expect(out.String()).NotTo(ContainSubstring("bus"))
}
