package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
)

// hottopicOffering is the service offering of the Hot Topic broker
// (broker.ServiceName): each of its instances is an event bus.
const hottopicOffering = "hottopic"

// ccPage is one page of a Cloud Controller v3 list.
type ccPage[R any] struct {
	Pagination cfenv.Page `json:"pagination"`
	Resources  []R        `json:"resources"`
	Included   struct {
		Plans []struct {
			GUID          string      `json:"guid"`
			Relationships ccRelations `json:"relationships"`
		} `json:"service_plans"`
		Offerings []struct {
			GUID string `json:"guid"`
			Name string `json:"name"`
		} `json:"service_offerings"`
	} `json:"included"`
}

type ccToOne struct {
	Data *struct {
		GUID string `json:"guid"`
	} `json:"data"`
}

func (r ccToOne) guid() string {
	if r.Data == nil {
		return ""
	}
	return r.Data.GUID
}

type ccRelations struct {
	ServicePlan     ccToOne `json:"service_plan"`
	ServiceOffering ccToOne `json:"service_offering"`
	ServiceInstance ccToOne `json:"service_instance"`
}

// listAll GETs path?q on the API and hands each page to onPage, following
// pagination.next to the last one.
func listAll[R any](ctx context.Context, c *ccClient, path string, q url.Values, onPage func(*ccPage[R])) error {
	q.Set("per_page", "500")
	next := c.api + path + "?" + q.Encode()
	for next != "" {
		var page ccPage[R]
		if err := c.do(ctx, http.MethodGet, next, nil, &page); err != nil {
			return err
		}
		onPage(&page)
		var err error
		if next, err = page.Pagination.NextURL(c.api); err != nil {
			return err
		}
	}
	return nil
}

// hottopicBuses returns the space's service instances an app may take its
// event credentials from (GUID → name): instances of the broker's hottopic
// offering, and user-provided services tagged "hottopic" or "nats" (the
// one-bus setup without a broker, as cfenv.FindNATS picks them).
func (c *ccClient) hottopicBuses(ctx context.Context, spaceGUID string) (map[string]string, error) {
	type instance struct {
		GUID          string      `json:"guid"`
		Name          string      `json:"name"`
		Type          string      `json:"type"`
		Tags          []string    `json:"tags"`
		Relationships ccRelations `json:"relationships"`
	}
	q := url.Values{
		"space_guids":                           {spaceGUID},
		"fields[service_plan]":                  {"guid,relationships.service_offering"},
		"fields[service_plan.service_offering]": {"guid,name"},
	}
	buses := map[string]string{}
	err := listAll(ctx, c, "/v3/service_instances", q, func(p *ccPage[instance]) {
		offeringOfPlan := map[string]string{}
		for _, pl := range p.Included.Plans {
			offeringOfPlan[pl.GUID] = pl.Relationships.ServiceOffering.guid()
		}
		hottopic := map[string]bool{}
		for _, o := range p.Included.Offerings {
			hottopic[o.GUID] = o.Name == hottopicOffering
		}
		for _, si := range p.Resources {
			svc := cfenv.Service{Tags: si.Tags}
			switch {
			case si.Type == "managed" && hottopic[offeringOfPlan[si.Relationships.ServicePlan.guid()]],
				si.Type == "user-provided" && (svc.HasTag("hottopic") || svc.HasTag("nats")):
				buses[si.GUID] = si.Name
			}
		}
	})
	return buses, err
}

// boundTo reports whether the app has a credential binding to one of the
// instances (a binding whose creation failed does not count).
func (c *ccClient) boundTo(ctx context.Context, appGUID string, instances map[string]string) (bool, error) {
	type binding struct {
		LastOperation *struct {
			Type  string `json:"type"`
			State string `json:"state"`
		} `json:"last_operation"`
		Relationships ccRelations `json:"relationships"`
	}
	bound := false
	err := listAll(ctx, c, "/v3/service_credential_bindings", url.Values{"app_guids": {appGUID}, "type": {"app"}}, func(p *ccPage[binding]) {
		for _, b := range p.Resources {
			failed := b.LastOperation != nil && b.LastOperation.Type == "create" && b.LastOperation.State == "failed"
			if _, ok := instances[b.Relationships.ServiceInstance.guid()]; ok && !failed {
				bound = true
			}
		}
	})
	return bound, err
}

// checkBinding refuses to map events to an app that holds no hottopic
// service binding: it would have no credentials to consume them with. The
// error names the buses of its space it could be bound to.
func checkBinding(ctx context.Context, t *cfTarget, app *ccApp) error {
	buses, err := t.cc.hottopicBuses(ctx, t.spaceGUID)
	if err != nil {
		return ccFailure("list the service instances of space "+t.space, err)
	}
	if len(buses) > 0 {
		bound, err := t.cc.boundTo(ctx, app.GUID, buses)
		if err != nil {
			return ccFailure(fmt.Sprintf("list the service bindings of app '%s'", app.Name), err)
		}
		if bound {
			return nil
		}
	}
	names := make([]string, 0, len(buses))
	for _, n := range buses {
		names = append(names, n)
	}
	slices.Sort(names)
	return mapping.NoBinding(app.Name, names)
}
