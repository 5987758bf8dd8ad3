package ccdouble

import (
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// Services: offerings with plans (as a broker's catalog registers them),
// managed and user-provided service instances in spaces, and app credential
// bindings, in the v3 shapes of /v3/service_instances and
// /v3/service_credential_bindings.

type serviceOffering struct {
	guid, name string
	tags       []string
	created    time.Time
}

type servicePlan struct {
	guid, name, offeringGUID string
	created                  time.Time
}

type serviceInstance struct {
	guid, name, spaceGUID, kind string // kind: managed, user-provided
	planGUID                    string // managed only
	tags                        []string
	created                     time.Time
}

type serviceBinding struct {
	guid, appGUID, instanceGUID string
	created                     time.Time
}

// AddServicePlan registers a plan of a service offering (created with its
// tags on first use of the name, as a broker's catalog would) and returns
// the plan's GUID.
func (c *CC) AddServicePlan(offering, plan string, offeringTags ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var o *serviceOffering
	for _, g := range c.offeringOrder {
		if c.offerings[g].name == offering {
			o = c.offerings[g]
		}
	}
	if o == nil {
		o = &serviceOffering{guid: newGUID(), name: offering, tags: slices.Clone(offeringTags), created: c.now()}
		c.offerings[o.guid] = o
		c.offeringOrder = append(c.offeringOrder, o.guid)
	}
	p := &servicePlan{guid: newGUID(), name: plan, offeringGUID: o.guid, created: c.now()}
	c.plans[p.guid] = p
	return p.guid
}

// AddServiceInstance creates a managed service instance of the plan in the
// space (cf create-service) and returns its GUID.
func (c *CC) AddServiceInstance(spaceGUID, name, planGUID string, tags ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.plans[planGUID] == nil {
		panic("ccdouble: AddServiceInstance: unknown plan " + planGUID)
	}
	return c.addInstanceLocked("AddServiceInstance", spaceGUID, name, "managed", planGUID, tags)
}

// AddUserProvidedService creates a user-provided service instance in the
// space (cf create-user-provided-service -t TAGS) and returns its GUID.
func (c *CC) AddUserProvidedService(spaceGUID, name string, tags ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addInstanceLocked("AddUserProvidedService", spaceGUID, name, "user-provided", "", tags)
}

func (c *CC) addInstanceLocked(op, spaceGUID, name, kind, planGUID string, tags []string) string {
	if c.spaces[spaceGUID] == nil {
		panic("ccdouble: " + op + ": unknown space " + spaceGUID)
	}
	si := &serviceInstance{guid: newGUID(), name: name, spaceGUID: spaceGUID, kind: kind, planGUID: planGUID,
		tags: append([]string{}, tags...), created: c.now()}
	c.instances[si.guid] = si
	c.instanceOrder = append(c.instanceOrder, si.guid)
	return si.guid
}

// BindService binds the app to the service instance (cf bind-service) and
// returns the credential binding's GUID.
func (c *CC) BindService(appGUID, instanceGUID string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.mustApp("BindService", appGUID)
	si := c.instances[instanceGUID]
	if si == nil {
		panic("ccdouble: BindService: unknown service instance " + instanceGUID)
	}
	if si.spaceGUID != a.spaceGUID {
		panic("ccdouble: BindService: the instance is in another space than the app")
	}
	b := &serviceBinding{guid: newGUID(), appGUID: appGUID, instanceGUID: instanceGUID, created: c.now()}
	c.bindings[b.guid] = b
	c.bindingOrder = append(c.bindingOrder, b.guid)
	return b.guid
}

// UnbindService deletes a credential binding (cf unbind-service).
func (c *CC) UnbindService(bindingGUID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.bindings, bindingGUID)
	c.bindingOrder = slices.DeleteFunc(c.bindingOrder, func(g string) bool { return g == bindingGUID })
}

func (c *CC) lastOperation(t time.Time) map[string]any {
	return map[string]any{"type": "create", "state": "succeeded", "description": "Operation succeeded",
		"created_at": ts(t), "updated_at": ts(t)}
}

func (c *CC) presentInstance(si *serviceInstance) map[string]any {
	self := "/v3/service_instances/" + si.guid
	body := map[string]any{
		"guid": si.guid, "created_at": ts(si.created), "updated_at": ts(si.created),
		"name": si.name, "tags": append([]string{}, si.tags...), "type": si.kind,
		"last_operation": c.lastOperation(si.created),
		"metadata":       metadataJSON(nil, nil),
	}
	links := map[string]any{
		"self":                        c.link(self),
		"space":                       c.link("/v3/spaces/" + si.spaceGUID),
		"service_credential_bindings": c.link("/v3/service_credential_bindings?service_instance_guids=" + si.guid),
		"service_route_bindings":      c.link("/v3/service_route_bindings?service_instance_guids=" + si.guid),
	}
	if si.kind == "managed" {
		body["maintenance_info"] = map[string]any{}
		body["upgrade_available"] = false
		body["dashboard_url"] = nil
		body["relationships"] = map[string]any{"service_plan": toOne(si.planGUID), "space": toOne(si.spaceGUID)}
		links["service_plan"] = c.link("/v3/service_plans/" + si.planGUID)
		links["parameters"] = c.link(self + "/parameters")
		links["shared_spaces"] = c.link(self + "/relationships/shared_spaces")
	} else {
		body["syslog_drain_url"] = nil
		body["route_service_url"] = nil
		body["relationships"] = map[string]any{"space": toOne(si.spaceGUID)}
		links["credentials"] = c.link(self + "/credentials")
	}
	body["links"] = links
	return body
}

// instanceFields are the fields[RESOURCE]=KEYS CC accepts on service instance reads.
var instanceFields = map[string][]string{
	"space":                         {"guid", "name", "relationships.organization"},
	"space.organization":            {"guid", "name"},
	"service_plan":                  {"guid", "name", "relationships.service_offering"},
	"service_plan.service_offering": {"guid", "name", "description", "documentation_url", "tags", "relationships.service_broker"},
	"service_plan.service_offering.service_broker": {"guid", "name"},
}

// parseFields reads fields[RESOURCE]=k1,k2 parameters.
func parseFields(lq *listQuery) (map[string][]string, *ccError) {
	out := map[string][]string{}
	for key, vals := range lq.q {
		res, ok := strings.CutPrefix(key, "fields[")
		if !ok {
			continue
		}
		res = strings.TrimSuffix(res, "]")
		allowed, known := instanceFields[res]
		if !known {
			return nil, errBadQuery("Fields [" + res + "] valid resources are: 'space', 'space.organization', 'service_plan', 'service_plan.service_offering', 'service_plan.service_offering.service_broker'")
		}
		for _, k := range strings.Split(strings.Join(vals, ","), ",") {
			if !slices.Contains(allowed, k) {
				return nil, errBadQuery("Fields valid keys for '" + res + "' are: '" + strings.Join(allowed, "', '") + "'")
			}
			out[res] = append(out[res], k)
		}
	}
	return out, nil
}

// pick keeps the requested keys of a full resource ("relationships.x" keeps one relationship).
func pick(full map[string]any, keys []string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		if rel, ok := strings.CutPrefix(k, "relationships."); ok {
			rels, _ := out["relationships"].(map[string]any)
			if rels == nil {
				rels = map[string]any{}
				out["relationships"] = rels
			}
			rels[rel] = full["relationships"].(map[string]any)[rel]
			continue
		}
		out[k] = full[k]
	}
	return out
}

// instanceIncluded is the "included" block of the requested fields.
func (c *CC) instanceIncluded(fields map[string][]string, sis []*serviceInstance) map[string]any {
	if len(fields) == 0 {
		return nil
	}
	inc := map[string]any{}
	add := func(kind string, seen map[string]bool, guid string, full func() map[string]any, keys []string) {
		if guid == "" || seen[guid] {
			return
		}
		seen[guid] = true
		list, _ := inc[kind].([]any)
		inc[kind] = append(list, pick(full(), keys))
	}
	seen := map[string]map[string]bool{}
	for _, res := range []string{"space", "space.organization", "service_plan", "service_plan.service_offering", "service_plan.service_offering.service_broker"} {
		seen[res] = map[string]bool{}
	}
	for _, si := range sis {
		s := c.spaces[si.spaceGUID]
		if keys, ok := fields["space"]; ok {
			add("spaces", seen["space"], s.guid, func() map[string]any { return c.presentSpace(s) }, keys)
		}
		if keys, ok := fields["space.organization"]; ok {
			add("organizations", seen["space.organization"], s.orgGUID, func() map[string]any { return c.presentOrg(c.orgs[s.orgGUID]) }, keys)
		}
		p := c.plans[si.planGUID]
		if p == nil {
			continue
		}
		o := c.offerings[p.offeringGUID]
		if keys, ok := fields["service_plan"]; ok {
			add("service_plans", seen["service_plan"], p.guid, func() map[string]any {
				return map[string]any{"guid": p.guid, "name": p.name, "relationships": map[string]any{"service_offering": toOne(o.guid)}}
			}, keys)
		}
		if keys, ok := fields["service_plan.service_offering"]; ok {
			add("service_offerings", seen["service_plan.service_offering"], o.guid, func() map[string]any {
				return map[string]any{"guid": o.guid, "name": o.name, "description": o.name, "documentation_url": nil,
					"tags": append([]string{}, o.tags...), "relationships": map[string]any{"service_broker": toOne("")}}
			}, keys)
		}
	}
	for res, kind := range map[string]string{"space": "spaces", "space.organization": "organizations", "service_plan": "service_plans", "service_plan.service_offering": "service_offerings", "service_plan.service_offering.service_broker": "service_brokers"} {
		if _, ok := fields[res]; ok && inc[kind] == nil {
			inc[kind] = []any{}
		}
	}
	return inc
}

func (c *CC) canSeeInstanceLocked(k caller, si *serviceInstance) bool {
	s := c.spaces[si.spaceGUID]
	return s != nil && c.canSeeSpaceLocked(k, s)
}

func (c *CC) listServiceInstances(w http.ResponseWriter, r *http.Request, k caller) *ccError {
	lq, err := parseList(r, "names", "guids", "space_guids", "organization_guids", "type", "service_plan_guids",
		"service_plan_names", "label_selector", "fields", "created_ats", "updated_ats")
	if err != nil {
		return err
	}
	fields, err := parseFields(lq)
	if err != nil {
		return err
	}
	if t := lq.q.Get("type"); lq.q.Has("type") && t != "managed" && t != "user-provided" {
		return errBadQuery("Type must be one of 'managed', 'user-provided'")
	}
	names, guids, spaceGUIDs, orgGUIDs := lq.list("names"), lq.list("guids"), lq.list("space_guids"), lq.list("organization_guids")
	types, planGUIDs, planNames := lq.list("type"), lq.list("service_plan_guids"), lq.list("service_plan_names")
	c.mu.Lock()
	defer c.mu.Unlock()
	var picked []*serviceInstance
	for _, g := range c.instanceOrder {
		si := c.instances[g]
		planName := ""
		if p := c.plans[si.planGUID]; p != nil {
			planName = p.name
		}
		if keep(names, si.name) && keep(guids, si.guid) && keep(spaceGUIDs, si.spaceGUID) &&
			keep(orgGUIDs, c.spaces[si.spaceGUID].orgGUID) && keep(types, si.kind) &&
			keep(planGUIDs, si.planGUID) && keep(planNames, planName) && c.canSeeInstanceLocked(k, si) {
			picked = append(picked, si)
		}
	}
	if lq.q.Get("order_by") == "name" {
		sort.SliceStable(picked, func(i, j int) bool { return picked[i].name < picked[j].name })
	}
	start := min((lq.page-1)*lq.perPage, len(picked))
	included := c.instanceIncluded(fields, picked[start:min(start+lq.perPage, len(picked))])
	out := make([]any, len(picked))
	for i, si := range picked {
		out[i] = c.presentInstance(si)
	}
	c.writePage(w, r, lq, out, included)
	return nil
}

func (c *CC) getServiceInstance(w http.ResponseWriter, r *http.Request, k caller, guid string) *ccError {
	lq, err := parseList(r, "fields")
	if err != nil {
		return err
	}
	fields, err := parseFields(lq)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	si := c.instances[guid]
	if si == nil || !c.canSeeInstanceLocked(k, si) {
		return errResourceNotFound("Service instance")
	}
	body := c.presentInstance(si)
	if inc := c.instanceIncluded(fields, []*serviceInstance{si}); inc != nil {
		body["included"] = inc
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (c *CC) presentBinding(b *serviceBinding) map[string]any {
	self := "/v3/service_credential_bindings/" + b.guid
	return map[string]any{
		"guid": b.guid, "created_at": ts(b.created), "updated_at": ts(b.created),
		"name": nil, "type": "app",
		"last_operation": c.lastOperation(b.created),
		"metadata":       metadataJSON(nil, nil),
		"relationships":  map[string]any{"app": toOne(b.appGUID), "service_instance": toOne(b.instanceGUID)},
		"links": map[string]any{
			"self":             c.link(self),
			"details":          c.link(self + "/details"),
			"parameters":       c.link(self + "/parameters"),
			"service_instance": c.link("/v3/service_instances/" + b.instanceGUID),
			"app":              c.link("/v3/apps/" + b.appGUID),
		},
	}
}

func (c *CC) listServiceBindings(w http.ResponseWriter, r *http.Request, k caller) *ccError {
	lq, err := parseList(r, "names", "guids", "service_instance_guids", "service_instance_names", "app_guids", "app_names",
		"service_plan_guids", "service_plan_names", "service_offering_guids", "service_offering_names", "type",
		"include", "label_selector", "created_ats", "updated_ats")
	if err != nil {
		return err
	}
	if t := lq.q.Get("type"); lq.q.Has("type") && t != "app" && t != "key" {
		return errBadQuery("Type must be one of 'app', 'key'")
	}
	var incApp, incInstance bool
	if lq.q.Has("include") {
		for _, v := range strings.Split(lq.q.Get("include"), ",") {
			switch v {
			case "app":
				incApp = true
			case "service_instance":
				incInstance = true
			default:
				return errBadQuery("Invalid included resource: '" + v + "'")
			}
		}
	}
	guids, siGUIDs, siNames, appGUIDs, appNames := lq.list("guids"), lq.list("service_instance_guids"), lq.list("service_instance_names"), lq.list("app_guids"), lq.list("app_names")
	types := lq.list("type")
	c.mu.Lock()
	defer c.mu.Unlock()
	var picked []*serviceBinding
	for _, g := range c.bindingOrder {
		b := c.bindings[g]
		a, si := c.apps[b.appGUID], c.instances[b.instanceGUID]
		if a == nil || si == nil {
			continue
		}
		if keep(guids, b.guid) && keep(siGUIDs, si.guid) && keep(siNames, si.name) && keep(appGUIDs, a.guid) &&
			keep(appNames, a.name) && keep(types, "app") && c.canSeeAppLocked(k, a) {
			picked = append(picked, b)
		}
	}
	start := min((lq.page-1)*lq.perPage, len(picked))
	var included map[string]any
	if incApp || incInstance {
		included = map[string]any{}
		apps, sis := []any{}, []any{}
		seenA, seenS := map[string]bool{}, map[string]bool{}
		for _, b := range picked[start:min(start+lq.perPage, len(picked))] {
			if incApp && !seenA[b.appGUID] {
				seenA[b.appGUID] = true
				apps = append(apps, c.presentApp(c.apps[b.appGUID]))
			}
			if incInstance && !seenS[b.instanceGUID] {
				seenS[b.instanceGUID] = true
				sis = append(sis, c.presentInstance(c.instances[b.instanceGUID]))
			}
		}
		if incApp {
			included["apps"] = apps
		}
		if incInstance {
			included["service_instances"] = sis
		}
	}
	out := make([]any, len(picked))
	for i, b := range picked {
		out[i] = c.presentBinding(b)
	}
	c.writePage(w, r, lq, out, included)
	return nil
}

func (c *CC) getServiceBinding(w http.ResponseWriter, k caller, guid string) *ccError {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.bindings[guid]
	if b == nil || c.apps[b.appGUID] == nil || !c.canSeeAppLocked(k, c.apps[b.appGUID]) {
		return errResourceNotFound("Service credential binding")
	}
	writeJSON(w, http.StatusOK, c.presentBinding(b))
	return nil
}
