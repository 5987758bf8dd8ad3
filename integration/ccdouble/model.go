package ccdouble

import (
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"time"
)

type org struct {
	guid, name string
	created    time.Time
}

type space struct {
	guid, name, orgGUID string
	created             time.Time
}

type app struct {
	guid, name, spaceGUID, state string
	labels, annotations          map[string]string
	processes                    []*process // web first
	deploying                    bool
	created, updated             time.Time
}

type process struct {
	guid, appGUID, ptype string
	instances            int
	memoryMB, diskMB     int
	logRate              int
	states               map[int]string // index → state when not RUNNING
	created, updated     time.Time
}

// newGUID returns a random version-4 UUID, the form CC uses for every GUID.
func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// AddOrg creates an organization and returns its GUID.
func (c *CC) AddOrg(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := &org{guid: newGUID(), name: name, created: c.now()}
	c.orgs[o.guid] = o
	c.orgOrder = append(c.orgOrder, o.guid)
	return o.guid
}

// AddSpace creates a space in the organization and returns its GUID.
func (c *CC) AddSpace(orgGUID, name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.orgs[orgGUID] == nil {
		panic("ccdouble: AddSpace: unknown organization " + orgGUID)
	}
	s := &space{guid: newGUID(), name: name, orgGUID: orgGUID, created: c.now()}
	c.spaces[s.guid] = s
	c.spaceOrder = append(c.spaceOrder, s.guid)
	return s.guid
}

// AddApp creates a STARTED app in the space with a web process of one
// instance and returns the app GUID. labels and annotations may be nil; they
// are not validated, so tests can seed what a real CC would hold.
func (c *CC) AddApp(spaceGUID, name string, labels, annotations map[string]string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spaces[spaceGUID] == nil {
		panic("ccdouble: AddApp: unknown space " + spaceGUID)
	}
	now := c.now()
	a := &app{
		guid: newGUID(), name: name, spaceGUID: spaceGUID, state: "STARTED",
		labels: cloneMap(labels), annotations: cloneMap(annotations),
		created: now, updated: now,
	}
	c.apps[a.guid] = a
	c.appOrder = append(c.appOrder, a.guid)
	c.addProcessLocked(a, "web", 1)
	return a.guid
}

// AddProcess adds a process of the given type to an app and returns its GUID.
func (c *CC) AddProcess(appGUID, processType string, instances int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.mustApp("AddProcess", appGUID)
	if a.process(processType) != nil {
		panic("ccdouble: AddProcess: app " + appGUID + " already has a " + processType + " process")
	}
	return c.addProcessLocked(a, processType, instances).guid
}

func (c *CC) addProcessLocked(a *app, ptype string, instances int) *process {
	now := c.now()
	p := &process{
		guid: newGUID(), appGUID: a.guid, ptype: ptype, instances: instances,
		memoryMB: 1024, diskMB: 1024, logRate: -1, states: map[int]string{},
		created: now, updated: now,
	}
	a.processes = append(a.processes, p)
	c.processes[p.guid] = p
	return p
}

// SetInstances sets a process's instance count without recording a call, as
// if someone else (cf scale, a deploy) had changed it.
func (c *CC) SetInstances(appGUID, processType string, instances int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.mustProcess("SetInstances", appGUID, processType)
	p.instances = instances
	p.updated = c.now()
}

// SetInstanceState makes the stats of one instance report state (RUNNING,
// CRASHED, STARTING, DOWN) instead of RUNNING.
func (c *CC) SetInstanceState(appGUID, processType string, index int, state string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustProcess("SetInstanceState", appGUID, processType).states[index] = state
}

// SetLabels replaces an app's labels without recording a call.
func (c *CC) SetLabels(appGUID string, labels map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustApp("SetLabels", appGUID).labels = cloneMap(labels)
}

// SetAnnotations replaces an app's annotations without recording a call.
func (c *CC) SetAnnotations(appGUID string, annotations map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustApp("SetAnnotations", appGUID).annotations = cloneMap(annotations)
}

// SetDeploying marks a deployment in flight for the app: scaling its web
// process then fails with 422, as on a real CC.
func (c *CC) SetDeploying(appGUID string, deploying bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustApp("SetDeploying", appGUID).deploying = deploying
}

// SetFeatureFlag turns a CC feature flag on or off; only app_scaling has an
// effect (scale by non-admins → 403 330002 when off).
func (c *CC) SetFeatureFlag(name string, enabled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.featureFlags[name] = enabled
}

// DeleteApp removes an app and its processes, as cf delete would.
func (c *CC) DeleteApp(appGUID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.mustApp("DeleteApp", appGUID)
	for _, p := range a.processes {
		delete(c.processes, p.guid)
	}
	delete(c.apps, appGUID)
	c.appOrder = slices.DeleteFunc(c.appOrder, func(g string) bool { return g == appGUID })
}

func (c *CC) mustApp(op, guid string) *app {
	a := c.apps[guid]
	if a == nil {
		panic("ccdouble: " + op + ": unknown app " + guid)
	}
	return a
}

func (c *CC) mustProcess(op, appGUID, ptype string) *process {
	p := c.mustApp(op, appGUID).process(ptype)
	if p == nil {
		panic("ccdouble: " + op + ": app " + appGUID + " has no " + ptype + " process")
	}
	return p
}

func (a *app) process(ptype string) *process {
	for _, p := range a.processes {
		if p.ptype == ptype {
			return p
		}
	}
	return nil
}

// App is a snapshot of an app held by the double.
type App struct {
	GUID, Name, SpaceGUID, State string
	Labels, Annotations          map[string]string
	// Instances is the web process's instance count.
	Instances int
	Processes []Process
}

// Process is a snapshot of a process held by the double.
type Process struct {
	GUID, Type                      string
	Instances, MemoryInMB, DiskInMB int
}

// App returns a snapshot of the app; its GUID is "" when there is no such app.
func (c *CC) App(guid string) App {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.apps[guid]
	if a == nil {
		return App{}
	}
	out := App{
		GUID: a.guid, Name: a.name, SpaceGUID: a.spaceGUID, State: a.state,
		Labels: cloneMap(a.labels), Annotations: cloneMap(a.annotations),
	}
	for _, p := range a.processes {
		if p.ptype == "web" {
			out.Instances = p.instances
		}
		out.Processes = append(out.Processes, Process{p.guid, p.ptype, p.instances, p.memoryMB, p.diskMB})
	}
	return out
}

// Instances returns the instance count of an app's process, -1 if unknown.
func (c *CC) Instances(appGUID, processType string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.apps[appGUID]; a != nil {
		if p := a.process(processType); p != nil {
			return p.instances
		}
	}
	return -1
}

// ProcessGUID returns the GUID of an app's process, "" if unknown.
func (c *CC) ProcessGUID(appGUID, processType string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.apps[appGUID]; a != nil {
		if p := a.process(processType); p != nil {
			return p.guid
		}
	}
	return ""
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}
