// Package supervisor is the dev runtime's local platform: it runs each app
// instance as local processes (the app's command and its sidecars), the way
// Diego runs a container, and restarts crashed instances. It implements the
// scaler's Platform, so the scaler scales local apps exactly as it scales
// apps on Cloud Foundry.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hottopic-io/hottopic/dev/console"
	"github.com/hottopic-io/hottopic/scaler"
)

// DefaultGracePeriod is how long a process may take to stop after SIGTERM,
// as on Cloud Foundry.
const DefaultGracePeriod = 10 * time.Second

// App is an app to run.
type App struct {
	GUID    string
	Name    string
	Dir     string // working directory of every process
	Command string // run with bash -c, as CF's launcher does
	// Env is the app's own environment (manifest env, env file); the
	// supervisor adds the CF-provided variables per instance.
	Env map[string]string
	// Instances is the count to start with.
	Instances int
	// Mapped apps are reported to the scaler, with their annotations.
	Mapped      bool
	Annotations map[string]string
	Sidecars    []Sidecar
	// VCAPServices is the app's VCAP_SERVICES (its bindings, as CF gives
	// them); empty: Config.NATSURL as one hottopic-tagged service.
	VCAPServices string
}

// Sidecar is a process run beside every instance of the app.
type Sidecar struct {
	Name string
	// Command runs with bash -c; or, when Path is set, Path runs with Args.
	Command string
	Path    string
	Args    []string
	// Drains marks a sidecar that must stop before the app does, so that
	// its in-flight deliveries can finish (this project's sidecar).
	Drains bool
}

// Config is shared by all instances.
type Config struct {
	Console *console.Console
	// NATSURL goes into the VCAP_SERVICES of every app that brings none.
	NATSURL string
	// BaseEnv is the environment every process starts from (the caller's,
	// minus anything CF would set itself); defaults to os.Environ filtered.
	BaseEnv []string
	// GracePeriod defaults to DefaultGracePeriod.
	GracePeriod time.Duration
}

// Supervisor runs the apps' instances.
type Supervisor struct {
	cfg  Config
	apps map[string]*app // by GUID
	list []*app          // manifest order

	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup
	abort   chan struct{}
	ports   *portPool
	aborted sync.Once
}

type app struct {
	App
	mu        sync.Mutex
	desired   int
	instances map[int]*instance // running or starting, by index
	stopping  map[int]*instance // told to stop, not yet gone
}

type instance struct {
	index int
	stop  chan struct{}
	done  chan struct{}
}

var _ scaler.Platform = (*Supervisor)(nil)

// New prepares the apps; nothing runs before Run.
func New(cfg Config, apps []App) (*Supervisor, error) {
	if cfg.Console == nil {
		return nil, errors.New("supervisor: a console is needed")
	}
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = DefaultGracePeriod
	}
	if cfg.BaseEnv == nil {
		cfg.BaseEnv = BaseEnv(os.Environ())
	}
	s := &Supervisor{cfg: cfg, apps: map[string]*app{}, abort: make(chan struct{}), ports: newPortPool()}
	for _, a := range apps {
		if a.GUID == "" || a.Name == "" {
			return nil, fmt.Errorf("supervisor: app %q needs a GUID and a name", a.Name)
		}
		if _, dup := s.apps[a.GUID]; dup {
			return nil, fmt.Errorf("supervisor: app GUID %s appears twice", a.GUID)
		}
		x := &app{App: a, instances: map[int]*instance{}, stopping: map[int]*instance{}}
		s.apps[a.GUID] = x
		s.list = append(s.list, x)
	}
	return s, nil
}

// Run starts every app's initial instances, keeps them running until ctx
// ends, then stops them all: sidecars that drain first, then the apps, each
// within the grace period. It returns once no process is left.
func (s *Supervisor) Run(ctx context.Context) error {
	for _, a := range s.list {
		s.scale(a, a.Instances)
	}
	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for _, a := range s.list {
		s.scale(a, 0)
	}
	s.wg.Wait()
	return nil
}

// Abort makes stopping instances kill their processes at once instead of
// waiting for the grace period (a second Ctrl-C).
func (s *Supervisor) Abort() { s.aborted.Do(func() { close(s.abort) }) }

// MappedApps lists the apps with event mappings.
func (s *Supervisor) MappedApps(context.Context) ([]scaler.App, error) {
	var out []scaler.App
	for _, a := range s.list {
		if !a.Mapped {
			continue
		}
		ann := make(map[string]string, len(a.Annotations))
		for k, v := range a.Annotations {
			ann[k] = v
		}
		out = append(out, scaler.App{GUID: a.GUID, Name: a.Name, Annotations: ann})
	}
	return out, nil
}

// Instances is the app's desired instance count.
func (s *Supervisor) Instances(_ context.Context, guid string) (int, error) {
	a, ok := s.apps[guid]
	if !ok {
		return 0, fmt.Errorf("app %s is not in the manifest", guid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.desired, nil
}

// Scale sets the desired instance count; instances start or stop in the
// background, highest indexes stopping first, as on Diego.
func (s *Supervisor) Scale(_ context.Context, guid string, n int) error {
	a, ok := s.apps[guid]
	if !ok {
		return fmt.Errorf("app %s is not in the manifest", guid)
	}
	if n < 0 {
		return fmt.Errorf("cannot scale %s to %d instances", a.Name, n)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("the dev runtime is shutting down")
	}
	s.scale(a, n)
	return nil
}

// Running reports how many instances of the app are up or starting (for
// status output and tests).
func (s *Supervisor) Running(guid string) int {
	a, ok := s.apps[guid]
	if !ok {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.instances)
}

func (s *Supervisor) scale(a *app, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.desired = n
	for i := 0; i < n; i++ {
		if _, ok := a.instances[i]; ok {
			continue
		}
		in := &instance{index: i, stop: make(chan struct{}), done: make(chan struct{})}
		var prev <-chan struct{}
		if old, ok := a.stopping[i]; ok {
			prev = old.done // the same index comes back once the old one is gone
		}
		a.instances[i] = in
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.runInstance(a, in, prev)
		}()
	}
	var extra []int
	for i := range a.instances {
		if i >= n {
			extra = append(extra, i)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(extra)))
	for _, i := range extra {
		in := a.instances[i]
		delete(a.instances, i)
		a.stopping[i] = in
		close(in.stop)
		go func() {
			<-in.done
			a.mu.Lock()
			if a.stopping[i] == in {
				delete(a.stopping, i)
			}
			a.mu.Unlock()
		}()
	}
}

// BaseEnv filters an environment down to what a local instance inherits:
// everything but the variables Cloud Foundry sets itself, so a developer's
// shell cannot leak another NATS URL or app identity into the instances.
func BaseEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "VCAP_"), strings.HasPrefix(k, "CF_"), strings.HasPrefix(k, "HOTTOPIC_"),
			k == "PORT", k == "INSTANCE_INDEX", k == "INSTANCE_GUID", k == "MEMORY_LIMIT":
			continue
		}
		out = append(out, kv)
	}
	return out
}
