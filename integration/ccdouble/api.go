package ccdouble

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// caller is who makes an authenticated CC request.
type caller struct {
	subject string
	scopes  []string
	roles   []Role
}

func (k caller) has(scope string) bool { return slices.Contains(k.scopes, scope) }
func (k caller) admin() bool           { return k.has("cloud_controller.admin") }
func (k caller) readsAll() bool {
	return k.admin() || k.has("cloud_controller.admin_read_only") || k.has("cloud_controller.global_auditor")
}

func (k caller) hasRole(guid string, types ...string) bool {
	for _, r := range k.roles {
		if r.GUID == guid && slices.Contains(types, r.Type) {
			return true
		}
	}
	return false
}

var spaceRoles = []string{"space_developer", "space_supporter", "space_manager", "space_auditor"}

func (c *CC) canSeeSpaceLocked(k caller, s *space) bool {
	return k.readsAll() || k.hasRole(s.guid, spaceRoles...) || k.hasRole(s.orgGUID, "organization_manager")
}

func (c *CC) canSeeOrgLocked(k caller, o *org) bool {
	if k.readsAll() || k.hasRole(o.guid, "organization_manager", "organization_user", "organization_auditor", "organization_billing_manager") {
		return true
	}
	for _, s := range c.spaces {
		if s.orgGUID == o.guid && k.hasRole(s.guid, spaceRoles...) {
			return true
		}
	}
	return false
}

func (c *CC) canSeeAppLocked(k caller, a *app) bool {
	s := c.spaces[a.spaceGUID]
	return s != nil && c.canSeeSpaceLocked(k, s)
}

// serveV3 authenticates, checks scopes and routes /v3/... requests.
func (c *CC) serveV3(w http.ResponseWriter, r *http.Request, p string) {
	cl, e := c.authenticate(r)
	if e != nil {
		writeCCError(w, e)
		return
	}
	c.mu.Lock()
	k := caller{subject: cl.subject(), scopes: cl.Scope, roles: slices.Clone(c.roles[cl.subject()])}
	c.mu.Unlock()
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if !k.readsAll() && !k.has("cloud_controller.read") {
			writeCCError(w, errInsufficientScope())
			return
		}
	} else if !k.admin() && !k.has("cloud_controller.write") {
		if k.readsAll() {
			writeCCError(w, errNotAuthorized())
		} else {
			writeCCError(w, errInsufficientScope())
		}
		return
	}

	parts := strings.Split(strings.TrimPrefix(p, "/v3/"), "/")
	get, post, patch := r.Method == http.MethodGet, r.Method == http.MethodPost, r.Method == http.MethodPatch
	var err *ccError
	switch {
	case get && len(parts) == 1 && parts[0] == "organizations":
		err = c.listOrgs(w, r, k)
	case get && len(parts) == 2 && parts[0] == "organizations":
		err = c.getOrg(w, k, parts[1])
	case get && len(parts) == 1 && parts[0] == "spaces":
		err = c.listSpaces(w, r, k)
	case get && len(parts) == 2 && parts[0] == "spaces":
		err = c.getSpace(w, r, k, parts[1])
	case get && len(parts) == 1 && parts[0] == "apps":
		err = c.listApps(w, r, k)
	case get && len(parts) == 2 && parts[0] == "apps":
		err = c.getApp(w, r, k, parts[1])
	case patch && len(parts) == 2 && parts[0] == "apps":
		err = c.patchApp(w, r, k, parts[1])
	case get && len(parts) == 3 && parts[0] == "apps" && parts[2] == "processes":
		err = c.listAppProcesses(w, r, k, parts[1])
	case get && len(parts) == 4 && parts[0] == "apps" && parts[2] == "processes":
		err = c.withAppProcess(k, parts[1], parts[3], func(p *process) { c.writeProcess(w, http.StatusOK, p) })
	case get && len(parts) == 5 && parts[0] == "apps" && parts[2] == "processes" && parts[4] == "stats":
		err = c.withAppProcess(k, parts[1], parts[3], func(p *process) { c.writeStats(w, p) })
	case post && len(parts) == 6 && parts[0] == "apps" && parts[2] == "processes" && parts[4] == "actions" && parts[5] == "scale":
		err = c.scaleAppProcess(w, r, k, parts[1], parts[3])
	case get && len(parts) == 1 && parts[0] == "processes":
		err = c.listProcesses(w, r, k)
	case get && len(parts) == 2 && parts[0] == "processes":
		err = c.withProcess(k, parts[1], func(p *process) { c.writeProcess(w, http.StatusOK, p) })
	case get && len(parts) == 3 && parts[0] == "processes" && parts[2] == "stats":
		err = c.withProcess(k, parts[1], func(p *process) { c.writeStats(w, p) })
	case post && len(parts) == 4 && parts[0] == "processes" && parts[2] == "actions" && parts[3] == "scale":
		err = c.scaleProcess(w, r, k, parts[1])
	case get && len(parts) == 1 && parts[0] == "service_instances":
		err = c.listServiceInstances(w, r, k)
	case get && len(parts) == 2 && parts[0] == "service_instances":
		err = c.getServiceInstance(w, r, k, parts[1])
	case get && len(parts) == 1 && parts[0] == "service_credential_bindings":
		err = c.listServiceBindings(w, r, k)
	case get && len(parts) == 2 && parts[0] == "service_credential_bindings":
		err = c.getServiceBinding(w, k, parts[1])
	case get && len(parts) == 1 && parts[0] == "routes":
		// the double has no routes; cf apps lists them for every app
		err = c.listEmpty(w, r, "app_guids", "domain_guids", "hosts", "organization_guids", "paths", "ports",
			"space_guids", "service_instance_guids", "include", "label_selector", "created_ats", "updated_ats")
	default:
		err = errUnknownRequest()
	}
	if err != nil {
		writeCCError(w, err)
	}
}

// ---- listing helpers ----

type listQuery struct {
	q       url.Values
	page    int
	perPage int
}

// parseList rejects unknown parameters and bad paging, like CC's list messages.
func parseList(r *http.Request, allowed ...string) (*listQuery, *ccError) {
	q := r.URL.Query()
	allowed = append(allowed, "page", "per_page", "order_by")
	var unknown []string
	for key := range q {
		base, _, _ := strings.Cut(key, "[")
		if !slices.Contains(allowed, base) {
			unknown = append(unknown, "'"+key+"'")
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, errBadQuery(fmt.Sprintf("Unknown query parameter(s): %s. Valid parameters are: '%s'",
			strings.Join(unknown, ", "), strings.Join(allowed, "', '")))
	}
	lq := &listQuery{q: q, page: 1, perPage: 50}
	if v := q.Get("page"); q.Has("page") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, errBadQuery("Page must be a positive integer")
		}
		lq.page = n
	}
	if v := q.Get("per_page"); q.Has("per_page") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5000 {
			return nil, errBadQuery("Per page must be between 1 and 5000")
		}
		lq.perPage = n
	}
	return lq, nil
}

// list returns the comma-separated values of a filter, nil when absent.
func (lq *listQuery) list(name string) []string {
	if !lq.q.Has(name) {
		return nil
	}
	out := []string{}
	for _, v := range strings.Split(lq.q.Get(name), ",") {
		out = append(out, v)
	}
	return out
}

// keep reports whether v passes an optional filter.
func keep(filter []string, v string) bool { return filter == nil || slices.Contains(filter, v) }

// writePage writes a paginated list of already filtered resources.
func (c *CC) writePage(w http.ResponseWriter, r *http.Request, lq *listQuery, resources []any, included map[string]any) {
	total := len(resources)
	last := max((total+lq.perPage-1)/lq.perPage, 1)
	start := min((lq.page-1)*lq.perPage, total)
	end := min(start+lq.perPage, total)
	href := func(page int) map[string]string {
		q := url.Values{}
		for k, v := range lq.q {
			q[k] = v
		}
		q.Set("page", strconv.Itoa(page))
		q.Set("per_page", strconv.Itoa(lq.perPage))
		return map[string]string{"href": c.URL() + r.URL.Path + "?" + q.Encode()}
	}
	pagination := map[string]any{
		"total_results": total,
		"total_pages":   last,
		"first":         href(1),
		"last":          href(last),
		"next":          nil,
		"previous":      nil,
	}
	if lq.page < last {
		pagination["next"] = href(lq.page + 1)
	}
	if lq.page > 1 {
		pagination["previous"] = href(lq.page - 1)
	}
	body := map[string]any{"pagination": pagination, "resources": append([]any{}, resources[start:end]...)}
	if included != nil {
		body["included"] = included
	}
	writeJSON(w, http.StatusOK, body)
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func (c *CC) link(path string) map[string]string { return map[string]string{"href": c.URL() + path} }

func (c *CC) postLink(path string) map[string]string {
	return map[string]string{"href": c.URL() + path, "method": "POST"}
}

func toOne(guid string) map[string]any {
	if guid == "" {
		return map[string]any{"data": nil}
	}
	return map[string]any{"data": map[string]string{"guid": guid}}
}

func metadataJSON(labels, annotations map[string]string) map[string]any {
	return map[string]any{"labels": cloneMap(labels), "annotations": cloneMap(annotations)}
}

func (c *CC) listEmpty(w http.ResponseWriter, r *http.Request, allowed ...string) *ccError {
	lq, err := parseList(r, allowed...)
	if err != nil {
		return err
	}
	c.writePage(w, r, lq, nil, nil)
	return nil
}

// ---- organizations and spaces ----

func (c *CC) presentOrg(o *org) map[string]any {
	return map[string]any{
		"guid": o.guid, "created_at": ts(o.created), "updated_at": ts(o.created), "name": o.name,
		"suspended":     false,
		"relationships": map[string]any{"quota": toOne("")},
		"metadata":      metadataJSON(nil, nil),
		"links": map[string]any{
			"self":           c.link("/v3/organizations/" + o.guid),
			"domains":        c.link("/v3/organizations/" + o.guid + "/domains"),
			"default_domain": c.link("/v3/organizations/" + o.guid + "/domains/default"),
			"quota":          c.link("/v3/organization_quotas"),
		},
	}
}

func (c *CC) presentSpace(s *space) map[string]any {
	return map[string]any{
		"guid": s.guid, "created_at": ts(s.created), "updated_at": ts(s.created), "name": s.name,
		"relationships": map[string]any{"organization": toOne(s.orgGUID), "quota": toOne("")},
		"metadata":      metadataJSON(nil, nil),
		"links": map[string]any{
			"self":           c.link("/v3/spaces/" + s.guid),
			"features":       c.link("/v3/spaces/" + s.guid + "/features"),
			"organization":   c.link("/v3/organizations/" + s.orgGUID),
			"apply_manifest": c.postLink("/v3/spaces/" + s.guid + "/actions/apply_manifest"),
		},
	}
}

func (c *CC) listOrgs(w http.ResponseWriter, r *http.Request, k caller) *ccError {
	lq, err := parseList(r, "names", "guids", "label_selector", "created_ats", "updated_ats")
	if err != nil {
		return err
	}
	names, guids := lq.list("names"), lq.list("guids")
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []any
	for _, g := range c.orgOrder {
		o := c.orgs[g]
		if keep(names, o.name) && keep(guids, o.guid) && c.canSeeOrgLocked(k, o) {
			out = append(out, c.presentOrg(o))
		}
	}
	c.writePage(w, r, lq, out, nil)
	return nil
}

func (c *CC) getOrg(w http.ResponseWriter, k caller, guid string) *ccError {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.orgs[guid]
	if o == nil || !c.canSeeOrgLocked(k, o) {
		return errResourceNotFound("Organization")
	}
	writeJSON(w, http.StatusOK, c.presentOrg(o))
	return nil
}

func (c *CC) listSpaces(w http.ResponseWriter, r *http.Request, k caller) *ccError {
	lq, err := parseList(r, "names", "guids", "organization_guids", "include", "label_selector", "created_ats", "updated_ats")
	if err != nil {
		return err
	}
	inc := lq.q.Get("include")
	if inc != "" && inc != "organization" {
		return errBadQuery("Invalid included resource: '" + inc + "'")
	}
	names, guids, orgs := lq.list("names"), lq.list("guids"), lq.list("organization_guids")
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []any
	var incOrgs []any
	seen := map[string]bool{}
	for _, g := range c.spaceOrder {
		s := c.spaces[g]
		if keep(names, s.name) && keep(guids, s.guid) && keep(orgs, s.orgGUID) && c.canSeeSpaceLocked(k, s) {
			out = append(out, c.presentSpace(s))
			if inc != "" && !seen[s.orgGUID] {
				seen[s.orgGUID] = true
				incOrgs = append(incOrgs, c.presentOrg(c.orgs[s.orgGUID]))
			}
		}
	}
	var included map[string]any
	if inc != "" {
		included = map[string]any{"organizations": append([]any{}, incOrgs...)}
	}
	c.writePage(w, r, lq, out, included)
	return nil
}

func (c *CC) getSpace(w http.ResponseWriter, r *http.Request, k caller, guid string) *ccError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.spaces[guid]
	if s == nil || !c.canSeeSpaceLocked(k, s) {
		return errResourceNotFound("Space")
	}
	body := c.presentSpace(s)
	if r.URL.Query().Get("include") == "organization" {
		body["included"] = map[string]any{"organizations": []any{c.presentOrg(c.orgs[s.orgGUID])}}
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// ---- apps ----

func (c *CC) presentApp(a *app) map[string]any {
	var droplet string
	if len(a.processes) > 0 {
		droplet = a.processes[0].guid // stable stand-in for a droplet GUID
	}
	self := "/v3/apps/" + a.guid
	return map[string]any{
		"guid": a.guid, "created_at": ts(a.created), "updated_at": ts(a.updated),
		"name": a.name, "state": a.state,
		"lifecycle": map[string]any{"type": "buildpack", "data": map[string]any{"buildpacks": []string{}, "stack": "cflinuxfs4"}},
		"relationships": map[string]any{
			"space":           toOne(a.spaceGUID),
			"current_droplet": toOne(droplet),
		},
		"metadata": metadataJSON(a.labels, a.annotations),
		"links": map[string]any{
			"self":                  c.link(self),
			"environment_variables": c.link(self + "/environment_variables"),
			"space":                 c.link("/v3/spaces/" + a.spaceGUID),
			"processes":             c.link(self + "/processes"),
			"packages":              c.link(self + "/packages"),
			"current_droplet":       c.link(self + "/droplets/current"),
			"droplets":              c.link(self + "/droplets"),
			"tasks":                 c.link(self + "/tasks"),
			"start":                 c.postLink(self + "/actions/start"),
			"stop":                  c.postLink(self + "/actions/stop"),
			"revisions":             c.link(self + "/revisions"),
			"deployed_revisions":    c.link(self + "/revisions/deployed"),
			"features":              c.link(self + "/features"),
		},
	}
}

// appIncluded builds the "included" block for include=space[.organization].
func (c *CC) appIncluded(include string, apps []*app) (map[string]any, *ccError) {
	switch include {
	case "":
		return nil, nil
	case "space", "space.organization":
	default:
		return nil, errBadQuery("Invalid included resource: '" + include + "'")
	}
	spaces, orgs := []any{}, []any{}
	seenS, seenO := map[string]bool{}, map[string]bool{}
	for _, a := range apps {
		s := c.spaces[a.spaceGUID]
		if !seenS[s.guid] {
			seenS[s.guid] = true
			spaces = append(spaces, c.presentSpace(s))
		}
		if include == "space.organization" && !seenO[s.orgGUID] {
			seenO[s.orgGUID] = true
			orgs = append(orgs, c.presentOrg(c.orgs[s.orgGUID]))
		}
	}
	inc := map[string]any{"spaces": spaces}
	if include == "space.organization" {
		inc["organizations"] = orgs
	}
	return inc, nil
}

func (c *CC) listApps(w http.ResponseWriter, r *http.Request, k caller) *ccError {
	lq, err := parseList(r, "guids", "names", "space_guids", "organization_guids", "stacks", "lifecycle_type",
		"label_selector", "include", "created_ats", "updated_ats")
	if err != nil {
		return err
	}
	var reqs []requirement
	if lq.q.Has("label_selector") {
		var msg string
		if reqs, msg = parseSelector(lq.q.Get("label_selector")); msg != "" {
			return errBadQuery(msg)
		}
	}
	orderBy := lq.q.Get("order_by")
	field := strings.TrimPrefix(orderBy, "-")
	if orderBy != "" && !slices.Contains([]string{"created_at", "updated_at", "name", "state"}, field) {
		return errBadQuery("Order by can only be: 'created_at', 'updated_at', 'name', 'state'")
	}
	guids, names, spaceGUIDs, orgGUIDs := lq.list("guids"), lq.list("names"), lq.list("space_guids"), lq.list("organization_guids")
	stacks, lifecycle := lq.list("stacks"), lq.list("lifecycle_type")

	c.mu.Lock()
	defer c.mu.Unlock()
	var picked []*app
	for _, g := range c.appOrder {
		a := c.apps[g]
		if keep(guids, a.guid) && keep(names, a.name) && keep(spaceGUIDs, a.spaceGUID) &&
			keep(orgGUIDs, c.spaces[a.spaceGUID].orgGUID) && keep(stacks, "cflinuxfs4") &&
			keep(lifecycle, "buildpack") && matches(reqs, a.labels) && c.canSeeAppLocked(k, a) {
			picked = append(picked, a)
		}
	}
	switch field {
	case "name":
		sort.SliceStable(picked, func(i, j int) bool { return picked[i].name < picked[j].name })
	case "state":
		sort.SliceStable(picked, func(i, j int) bool { return picked[i].state < picked[j].state })
	case "updated_at":
		sort.SliceStable(picked, func(i, j int) bool { return picked[i].updated.Before(picked[j].updated) })
	}
	if strings.HasPrefix(orderBy, "-") {
		slices.Reverse(picked)
	}
	// included resources cover the requested page only, as on CC
	start := min((lq.page-1)*lq.perPage, len(picked))
	included, err := c.appIncluded(lq.q.Get("include"), picked[start:min(start+lq.perPage, len(picked))])
	if err != nil {
		return err
	}
	out := make([]any, len(picked))
	for i, a := range picked {
		out[i] = c.presentApp(a)
	}
	c.writePage(w, r, lq, out, included)
	return nil
}

func (c *CC) getApp(w http.ResponseWriter, r *http.Request, k caller, guid string) *ccError {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.apps[guid]
	if a == nil || !c.canSeeAppLocked(k, a) {
		return errResourceNotFound("App")
	}
	body := c.presentApp(a)
	included, err := c.appIncluded(r.URL.Query().Get("include"), []*app{a})
	if err != nil {
		return err
	}
	if included != nil {
		body["included"] = included
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// decodeObject parses a JSON object body, keeping numbers exact.
func decodeObject(r *http.Request) (map[string]any, *ccError) {
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(r.Body)
	if buf.Len() == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(&buf)
	dec.UseNumber()
	var body any
	if err := dec.Decode(&body); err != nil {
		return nil, errParse()
	}
	m, ok := body.(map[string]any)
	if !ok {
		return nil, errParse()
	}
	return m, nil
}

func unknownFields(body map[string]any, allowed ...string) *ccError {
	var unknown []string
	for key := range body {
		if !slices.Contains(allowed, key) {
			unknown = append(unknown, "'"+key+"'")
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return errUnprocessable("Unknown field(s): " + strings.Join(unknown, ", "))
}

func (c *CC) patchApp(w http.ResponseWriter, r *http.Request, k caller, guid string) *ccError {
	body, err := decodeObject(r)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.apps[guid]
	if a == nil || !c.canSeeAppLocked(k, a) {
		return errResourceNotFound("App")
	}
	if !k.admin() && !k.hasRole(a.spaceGUID, "space_developer") {
		return errNotAuthorized()
	}
	if err := unknownFields(body, "name", "lifecycle", "metadata"); err != nil {
		return err
	}
	var problems []string
	newName := a.name
	if v, ok := body["name"]; ok {
		s, isString := v.(string)
		switch {
		case !isString:
			problems = append(problems, "Name must be a string")
		case s == "":
			// CC assigns it and the model's presence validation fails; this is
			// what go-cfclient's AppUpdate without Name runs into.
			problems = append(problems, "name presence")
		default:
			newName = s
			for _, other := range c.apps {
				if other != a && other.spaceGUID == a.spaceGUID && other.name == s {
					problems = append(problems, fmt.Sprintf("App with the name '%s' already exists.", s))
				}
			}
		}
	}
	if lc, ok := body["lifecycle"].(map[string]any); ok {
		if t, _ := lc["type"].(string); t != "" && t != "buildpack" {
			problems = append(problems, "Lifecycle type cannot be changed")
		}
	}
	var labels, annotations map[string]*string
	if md, ok := body["metadata"]; ok && md != nil {
		var p []string
		labels, annotations, p = validateMetadata(md)
		problems = append(problems, p...)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return errUnprocessable(strings.Join(problems, ", "))
	}
	a.name = newName
	merge(a.labels, labels)
	merge(a.annotations, annotations)
	a.updated = c.now()
	writeJSON(w, http.StatusOK, c.presentApp(a))
	return nil
}

func merge(dst map[string]string, changes map[string]*string) {
	for k, v := range changes {
		if v == nil {
			delete(dst, k)
		} else {
			dst[k] = *v
		}
	}
}

// ---- processes ----

func (c *CC) presentProcess(p *process) map[string]any {
	self := "/v3/processes/" + p.guid
	a := c.apps[p.appGUID]
	return map[string]any{
		"guid": p.guid, "created_at": ts(p.created), "updated_at": ts(p.updated),
		"version": p.guid, "type": p.ptype, "command": nil, "user": "vcap",
		"instances": p.instances, "memory_in_mb": p.memoryMB, "disk_in_mb": p.diskMB,
		"log_rate_limit_in_bytes_per_second": p.logRate,
		"health_check":                       map[string]any{"type": "port", "data": map[string]any{"timeout": nil, "invocation_timeout": nil, "interval": nil}},
		"readiness_health_check":             map[string]any{"type": "process", "data": map[string]any{"invocation_timeout": nil, "interval": nil}},
		"relationships":                      map[string]any{"app": toOne(p.appGUID), "revision": toOne("")},
		"metadata":                           metadataJSON(nil, nil),
		"links": map[string]any{
			"self":  c.link(self),
			"scale": c.postLink(self + "/actions/scale"),
			"app":   c.link("/v3/apps/" + p.appGUID),
			"space": c.link("/v3/spaces/" + a.spaceGUID),
			"stats": c.link(self + "/stats"),
		},
	}
}

func (c *CC) writeProcess(w http.ResponseWriter, status int, p *process) {
	writeJSON(w, status, c.presentProcess(p))
}

func (c *CC) writeStats(w http.ResponseWriter, p *process) {
	now := time.Now().UTC()
	stats := make([]any, 0, p.instances)
	for i := range p.instances {
		state := p.states[i]
		if state == "" {
			state = "RUNNING"
		}
		entry := map[string]any{
			"type": p.ptype, "index": i, "instance_guid": fmt.Sprintf("%s-%04d", p.guid[:23], i),
			"state": state, "routable": state == "RUNNING",
			"usage": map[string]any{"time": now.Format(time.RFC3339), "cpu": 0.01, "cpu_entitlement": 0.02,
				"mem": 64 << 20, "disk": 128 << 20, "log_rate": 0},
			"host": "10.0.0.1", "instance_internal_ip": fmt.Sprintf("10.255.0.%d", i%250+1),
			"instance_ports": []map[string]int{{"external": 61000 + i, "internal": 8080,
				"external_tls_proxy_port": 61100 + i, "internal_tls_proxy_port": 61001}},
			"uptime": int(now.Sub(p.updated).Seconds()), "mem_quota": p.memoryMB << 20, "disk_quota": p.diskMB << 20,
			"log_rate_limit": p.logRate, "fds_quota": 16384, "isolation_segment": nil, "details": nil,
		}
		if state != "RUNNING" {
			entry["usage"] = map[string]any{}
			entry["uptime"] = 0
		}
		stats = append(stats, entry)
	}
	writeJSON(w, http.StatusOK, map[string]any{"resources": stats})
}

func (c *CC) withProcess(k caller, guid string, fn func(*process)) *ccError {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.processes[guid]
	if p == nil || !c.canSeeAppLocked(k, c.apps[p.appGUID]) {
		return errResourceNotFound("Process")
	}
	fn(p)
	return nil
}

func (c *CC) withAppProcess(k caller, appGUID, ptype string, fn func(*process)) *ccError {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.apps[appGUID]
	if a == nil || !c.canSeeAppLocked(k, a) {
		return errResourceNotFound("App")
	}
	p := a.process(ptype)
	if p == nil {
		return errResourceNotFound("Process")
	}
	fn(p)
	return nil
}

func (c *CC) listAppProcesses(w http.ResponseWriter, r *http.Request, k caller, appGUID string) *ccError {
	lq, err := parseList(r, "guids", "types", "label_selector", "created_ats", "updated_ats")
	if err != nil {
		return err
	}
	types, guids := lq.list("types"), lq.list("guids")
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.apps[appGUID]
	if a == nil || !c.canSeeAppLocked(k, a) {
		return errResourceNotFound("App")
	}
	var out []any
	for _, p := range a.processes {
		if keep(types, p.ptype) && keep(guids, p.guid) {
			out = append(out, c.presentProcess(p))
		}
	}
	c.writePage(w, r, lq, out, nil)
	return nil
}

func (c *CC) listProcesses(w http.ResponseWriter, r *http.Request, k caller) *ccError {
	lq, err := parseList(r, "guids", "types", "app_guids", "space_guids", "organization_guids", "label_selector", "created_ats", "updated_ats")
	if err != nil {
		return err
	}
	types, guids, appGUIDs, spaceGUIDs, orgGUIDs := lq.list("types"), lq.list("guids"), lq.list("app_guids"), lq.list("space_guids"), lq.list("organization_guids")
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []any
	for _, g := range c.appOrder {
		a := c.apps[g]
		if !keep(appGUIDs, a.guid) || !keep(spaceGUIDs, a.spaceGUID) || !keep(orgGUIDs, c.spaces[a.spaceGUID].orgGUID) || !c.canSeeAppLocked(k, a) {
			continue
		}
		for _, p := range a.processes {
			if keep(types, p.ptype) && keep(guids, p.guid) {
				out = append(out, c.presentProcess(p))
			}
		}
	}
	c.writePage(w, r, lq, out, nil)
	return nil
}

func (c *CC) scaleProcess(w http.ResponseWriter, r *http.Request, k caller, guid string) *ccError {
	c.mu.Lock()
	p := c.processes[guid]
	var appGUID, ptype string
	if p != nil {
		appGUID, ptype = p.appGUID, p.ptype
	}
	c.mu.Unlock()
	if p == nil {
		return errResourceNotFound("Process")
	}
	return c.scale(w, r, k, appGUID, ptype, "Process")
}

func (c *CC) scaleAppProcess(w http.ResponseWriter, r *http.Request, k caller, appGUID, ptype string) *ccError {
	return c.scale(w, r, k, appGUID, ptype, "App")
}

// scale follows cloud_controller_ng ProcessScaleMessage and ProcessScale.
func (c *CC) scale(w http.ResponseWriter, r *http.Request, k caller, appGUID, ptype, missing string) *ccError {
	body, err := decodeObject(r)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// CC's order: feature flag, message validation, lookup, role, process state.
	if !k.admin() && !c.featureFlags["app_scaling"] {
		return errFeatureDisabled("app_scaling")
	}
	if err := unknownFields(body, "instances", "memory_in_mb", "disk_in_mb", "log_rate_limit_in_bytes_per_second"); err != nil {
		return err
	}
	var problems []string
	field := func(key, label string, min, max int64) *int {
		v, ok := body[key]
		if !ok || v == nil {
			return nil
		}
		num, isNum := v.(json.Number)
		n, convErr := num.Int64()
		switch {
		case !isNum:
			problems = append(problems, label+" is not a number")
		case convErr != nil:
			problems = append(problems, label+" must be an integer")
		case n < min:
			problems = append(problems, fmt.Sprintf("%s must be greater than or equal to %d", label, min))
		case n > max:
			problems = append(problems, fmt.Sprintf("%s must be less than or equal to %d", label, max))
		default:
			i := int(n)
			return &i
		}
		return nil
	}
	instances := field("instances", "Instances", 0, 2000000)
	memory := field("memory_in_mb", "Memory in mb", 1, 1<<31-1)
	disk := field("disk_in_mb", "Disk in mb", 1, 1<<31-1)
	logRate := field("log_rate_limit_in_bytes_per_second", "Log rate limit in bytes per second", -1, 1<<63-1)
	if len(problems) > 0 {
		sort.Strings(problems)
		return errUnprocessable(strings.Join(problems, ", "))
	}
	a := c.apps[appGUID]
	if a == nil || !c.canSeeAppLocked(k, a) {
		return errResourceNotFound(missing)
	}
	p := a.process(ptype)
	if p == nil {
		return errResourceNotFound("Process")
	}
	if !k.admin() && !k.hasRole(a.spaceGUID, "space_developer", "space_supporter") {
		return errNotAuthorized()
	}
	if a.deploying && p.ptype == "web" {
		return errUnprocessable("Cannot scale this process while a deployment is in flight.")
	}
	if instances != nil {
		p.instances = *instances
		for i := range p.states {
			if i >= p.instances {
				delete(p.states, i)
			}
		}
	}
	if memory != nil {
		p.memoryMB = *memory
	}
	if disk != nil {
		p.diskMB = *disk
	}
	if logRate != nil {
		p.logRate = *logRate
	}
	p.updated = c.now()
	c.writeProcess(w, http.StatusAccepted, p)
	return nil
}
