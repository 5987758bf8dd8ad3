package scaler

import (
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// fleetGatherer is /metrics in broker mode: the fleet's own metrics (the Go
// runtime and the process, once), then every bus Scaler's with a "bus" label
// (the bus's instance ID) on each series.
type fleetGatherer struct{ f *fleet }

func (g fleetGatherer) Gather() ([]*dto.MetricFamily, error) {
	fams, err := g.f.reg.Gather()
	if err != nil {
		return nil, err
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range fams {
		byName[mf.GetName()] = mf
	}
	for _, r := range g.f.scalers() {
		bfams, err := r.sc.metrics.reg.Gather()
		if err != nil {
			return nil, err
		}
		for _, mf := range bfams {
			name := mf.GetName()
			if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
				continue // the same process: counted once, by the fleet
			}
			for _, m := range mf.Metric {
				m.Label = append(m.Label, &dto.LabelPair{Name: new("bus"), Value: new(r.bus.ID)})
				sort.Slice(m.Label, func(i, j int) bool { return m.Label[i].GetName() < m.Label[j].GetName() })
			}
			if have := byName[name]; have != nil {
				have.Metric = append(have.Metric, mf.Metric...)
			} else {
				byName[name] = mf
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		out = append(out, mf)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}
