package supervisor

import (
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// runInstance keeps one instance running until it is told to stop,
// restarting it when any of its processes exits (a crash, as on Diego).
func (s *Supervisor) runInstance(a *app, in *instance, prev <-chan struct{}) {
	defer close(in.done)
	if prev != nil {
		select {
		case <-prev:
		case <-in.stop:
			return
		}
	}
	crashes := 0
	for {
		started := time.Now()
		g, err := s.start(a, in.index)
		if err != nil {
			s.cell(a, in.index, "Failed to start instance %d: %v", in.index, err)
		} else {
			select {
			case <-in.stop:
				s.cell(a, in.index, "Stopping instance %d", in.index)
				g.stop(s.cfg.GracePeriod, s.abort)
				s.cell(a, in.index, "Stopped instance %d", in.index)
				return
			case p := <-g.exited:
				g.stop(s.cfg.GracePeriod, s.abort)
				s.api(a, in.index, "App instance exited: %s: %s (CRASHED)", p.label, p.exitDescription())
			}
		}
		if time.Since(started) > 10*time.Second {
			crashes = 0
		}
		delay := restartDelay(crashes)
		crashes++
		if delay > 0 {
			s.api(a, in.index, "Restarting instance %d in %s", in.index, delay)
		}
		select {
		case <-in.stop:
			return
		case <-time.After(delay):
		}
	}
}

// restartDelay backs off like Diego: the first restart is immediate, then
// 1s, 2s, 4s… capped at 30s.
func restartDelay(crashes int) time.Duration {
	if crashes == 0 {
		return 0
	}
	d := time.Second << min(crashes-1, 5)
	return min(d, 30*time.Second)
}

func (s *Supervisor) cell(a *app, index int, format string, args ...any) {
	s.cfg.Console.Printf(fmt.Sprintf("%s [CELL/%d]", a.Name, index), format, args...)
}

func (s *Supervisor) api(a *app, index int, format string, args ...any) {
	s.cfg.Console.Printf(fmt.Sprintf("%s [API/%d]", a.Name, index), format, args...)
}

// group is the set of processes of one running instance.
type group struct {
	drainers []*proc // this project's sidecars: stopped first
	rest     []*proc // the app first, then other sidecars
	exited   chan *proc
	ports    []int
	pool     *portPool
}

type proc struct {
	label string // APP/PROC/WEB/0 or APP/PROC/WEB/0/<sidecar>
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
}

func (p *proc) exitDescription() string {
	if p.err == nil {
		return "Exited with status 0"
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "Exited on signal " + ws.Signal().String()
		}
		return "Exited with status " + strconv.Itoa(ee.ExitCode())
	}
	return p.err.Error()
}

func (s *Supervisor) start(a *app, index int) (*group, error) {
	appPort, err := s.ports.get()
	if err != nil {
		return nil, err
	}
	apiPort, err := s.ports.get()
	if err != nil {
		s.ports.put(appPort)
		return nil, err
	}
	g := &group{exited: make(chan *proc, 1+len(a.Sidecars)), ports: []int{appPort, apiPort}, pool: s.ports}
	env := s.instanceEnv(a, index, appPort, apiPort)
	s.cell(a, index, "Starting instance %d with PORT=%d", index, appPort)

	label := fmt.Sprintf("APP/PROC/WEB/%d", index)
	g.rest = []*proc{s.newProc(a, label, env, "bash", "-c", a.Command)}
	for _, sc := range a.Sidecars {
		var p *proc
		if sc.Path != "" {
			p = s.newProc(a, label+"/"+sc.Name, env, sc.Path, sc.Args...)
		} else {
			p = s.newProc(a, label+"/"+sc.Name, env, "bash", "-c", sc.Command)
		}
		if sc.Drains {
			g.drainers = append(g.drainers, p)
		} else {
			g.rest = append(g.rest, p)
		}
	}
	all := append(append([]*proc{}, g.rest...), g.drainers...)
	for i, p := range all {
		if err := p.cmd.Start(); err != nil {
			close(p.done)
			for _, q := range all[:i] {
				q.kill(syscall.SIGKILL)
				<-q.done
			}
			g.release()
			return nil, fmt.Errorf("%s: %v", p.label, err)
		}
		go func() {
			p.err = p.cmd.Wait()
			// Reap whatever the process left in its group (grandchildren).
			_ = KillGroup(p.cmd.Process.Pid, syscall.SIGKILL)
			close(p.done)
			g.exited <- p
		}()
	}
	return g, nil
}

// stop ends the instance: draining sidecars get SIGTERM first and the grace
// period to finish in-flight work, then the app and the other sidecars.
// abort (a second Ctrl-C) turns every wait into an immediate SIGKILL.
func (g *group) stop(grace time.Duration, abort <-chan struct{}) {
	terminate(g.drainers, grace, abort)
	terminate(g.rest, grace, abort)
	g.release()
}

func (g *group) release() {
	for _, p := range g.ports {
		g.pool.put(p)
	}
	g.ports = nil
}

// terminate sends SIGTERM to every process group, waits up to grace for
// them to exit, then kills what is left.
func terminate(ps []*proc, grace time.Duration, abort <-chan struct{}) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-p.done:
				return
			default:
			}
			p.kill(syscall.SIGTERM)
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-p.done:
				return
			case <-t.C:
			case <-abort:
			}
			p.kill(syscall.SIGKILL)
			<-p.done
		}()
	}
	wg.Wait()
}

func (p *proc) kill(sig syscall.Signal) {
	if p.cmd.Process != nil {
		_ = KillGroup(p.cmd.Process.Pid, sig)
	}
}

func (s *Supervisor) newProc(a *app, label string, env []string, name string, args ...string) *proc {
	cmd := exec.Command(name, args...)
	cmd.Dir = a.Dir
	cmd.Env = env
	out := s.cfg.Console.Writer(fmt.Sprintf("%s [%s] OUT", a.Name, label))
	errw := s.cfg.Console.Writer(fmt.Sprintf("%s [%s] ERR", a.Name, label))
	cmd.Stdout, cmd.Stderr = out, errw
	cmd.SysProcAttr = SysProcAttr()
	// The group is killed on exit; do not wait forever on a pipe some
	// escaped grandchild still holds.
	cmd.WaitDelay = time.Second
	p := &proc{label: label, cmd: cmd, done: make(chan struct{})}
	go func() {
		<-p.done
		out.Close()
		errw.Close()
	}()
	return p
}

// instanceEnv is what CF gives a web instance: the app's env, PORT,
// VCAP_APPLICATION, VCAP_SERVICES (the app's bindings, or the NATS server
// as a hottopic-tagged service) and the CF_INSTANCE_* variables; HOTTOPIC_LISTEN gives each
// instance's sidecar API its own port.
func (s *Supervisor) instanceEnv(a *app, index, port, apiPort int) []string {
	env := append([]string{}, s.cfg.BaseEnv...)
	for k, v := range a.Env {
		env = append(env, k+"="+v)
	}
	instanceGUID := nameUUID(fmt.Sprintf("%s/%d/%d", a.GUID, index, time.Now().UnixNano()))
	vcapApp, _ := json.Marshal(map[string]any{
		"application_id":      a.GUID,
		"application_name":    a.Name,
		"name":                a.Name,
		"application_uris":    []string{},
		"uris":                []string{},
		"application_version": a.GUID,
		"version":             a.GUID,
		"instance_id":         instanceGUID,
		"instance_index":      index,
		"process_id":          a.GUID,
		"process_type":        "web",
		"space_id":            nameUUID("dev/space"),
		"space_name":          "dev",
		"organization_id":     nameUUID("dev/org"),
		"organization_name":   "dev",
		"cf_api":              "",
		"host":                "127.0.0.1",
		"port":                port,
		"limits":              map[string]int{"fds": 16384},
	})
	vcapServices := []byte(a.VCAPServices)
	if a.VCAPServices == "" {
		vcapServices, _ = json.Marshal(map[string]any{
			"hottopic": []map[string]any{{
				"name":          "hottopic-dev",
				"instance_name": "hottopic-dev",
				"label":         "hottopic",
				"tags":          []string{"hottopic", "nats"},
				"credentials":   map[string]string{"uri": s.cfg.NATSURL},
			}},
		})
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	return append(env,
		"PORT="+strconv.Itoa(port),
		"VCAP_APPLICATION="+string(vcapApp),
		"VCAP_SERVICES="+string(vcapServices),
		"CF_INSTANCE_INDEX="+strconv.Itoa(index),
		"CF_INSTANCE_GUID="+instanceGUID,
		"CF_INSTANCE_IP=127.0.0.1",
		"CF_INSTANCE_INTERNAL_IP=127.0.0.1",
		"CF_INSTANCE_PORT="+strconv.Itoa(port),
		"CF_INSTANCE_ADDR="+addr,
		"INSTANCE_INDEX="+strconv.Itoa(index),
		"INSTANCE_GUID="+instanceGUID,
		"HOTTOPIC_LISTEN=127.0.0.1:"+strconv.Itoa(apiPort),
	)
}

// NameUUID is a deterministic, UUIDv5-shaped identifier for name, so an
// app keeps its GUID (and so its JetStream consumers) across restarts.
func NameUUID(name string) string { return nameUUID(name) }

func nameUUID(name string) string {
	h := sha1.Sum([]byte("hottopic-dev:" + name))
	h[6] = h[6]&0x0f | 0x50 // version 5
	h[8] = h[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// portPool hands out free loopback ports, never the same one twice while
// it is in use by an instance.
type portPool struct {
	mu   sync.Mutex
	used map[int]bool
}

func newPortPool() *portPool { return &portPool{used: map[int]bool{}} }

func (pp *portPool) get() (int, error) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("no free port on 127.0.0.1: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !pp.used[port] {
			pp.used[port] = true
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on 127.0.0.1")
}

func (pp *portPool) put(port int) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	delete(pp.used, port)
}
