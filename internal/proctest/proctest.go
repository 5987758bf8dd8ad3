// Package proctest runs this module's commands as real processes in tests:
// each command built once per test binary, started in its own process group
// with its output collected, and killed with its whole group when the test
// ends.
//
// A package that uses Build calls Main from its TestMain, which removes the
// binaries after the tests:
//
//	func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
package proctest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onsi/gomega/gbytes"
)

// modulePath is this module's import path; Build takes package paths below it.
const modulePath = "github.com/hottopic-io/hottopic"

var (
	mu     sync.Mutex
	inMain bool
	binDir string
	builds = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests, then removes what Build made, and returns the exit
// code for os.Exit.
func Main(m *testing.M) int {
	mu.Lock()
	inMain = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	return code
}

// Build compiles the module's package pkg ("./cmd/hottopic") the first time a
// test of this binary asks for it and returns the binary's path; a failed
// build fails every test that asks for it.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	mu.Lock()
	if !inMain {
		mu.Unlock()
		t.Fatal("proctest.Build: call proctest.Main from TestMain so the binaries are removed")
	}
	b := builds[pkg]
	if b == nil {
		b = &build{}
		builds[pkg] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.path, b.err = compile(pkg) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func compile(pkg string) (string, error) {
	mu.Lock()
	if binDir == "" {
		dir, err := os.MkdirTemp("", "hottopic-proctest-")
		if err != nil {
			mu.Unlock()
			return "", err
		}
		binDir = dir
	}
	dir := binDir
	mu.Unlock()
	importPath := path.Join(modulePath, strings.TrimPrefix(pkg, "./"))
	out := filepath.Join(dir, path.Base(importPath))
	if out2, err := exec.Command("go", "build", "-o", out, importPath).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out2)
	}
	return out, nil
}

// Proc is a started process.
type Proc struct {
	Cmd *exec.Cmd
	// Out collects stdout and stderr, except a stream the caller had set.
	// It is safe to read while the process writes; Eventually(p.Out) with
	// gbytes.Say waits for a line.
	Out *gbytes.Buffer

	done    chan struct{}
	waitErr error
}

// Start starts cmd in its own process group, as prepared by the caller (args,
// Env, Dir; a nil Env inherits this process's). When the test ends the whole
// group is killed and, if the test failed, the output is logged.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Out: gbytes.NewBuffer(), done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if cmd.WaitDelay == 0 {
		// A descendant outside the group must not hold the output open forever.
		cmd.WaitDelay = 10 * time.Second
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// The group outlives its leader when children are left behind.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), tail(p.Output(), logLines))
		}
	})
	return p
}

// logLines is how much of a process's output a failed test logs.
const logLines = 200

func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[%d lines before]\n", len(lines)-n) + strings.Join(lines[len(lines)-n:], "")
}

// Output is what the process wrote to Out so far.
func (p *Proc) Output() string { return string(p.Out.Contents()) }

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Done is closed when the process has exited and its output is collected.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited (for Eventually).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait did.
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

// ExitCode waits for the process to exit and returns its exit code (-1 when a
// signal ended it).
func (p *Proc) ExitCode() int {
	<-p.done
	return p.Cmd.ProcessState.ExitCode()
}

// Run runs cmd like Start and waits for it; it returns the output and the
// exit code. A process still running after timeout is killed with its group
// and fails the test.
func Run(t testing.TB, cmd *exec.Cmd, timeout time.Duration) (string, int) {
	t.Helper()
	p := Start(t, cmd)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Fatalf("%s %s: still running after %s, killed:\n%s", filepath.Base(cmd.Path), strings.Join(cmd.Args[1:], " "), timeout, p.Output())
	}
	return p.Output(), p.ExitCode()
}

// FreePortRun returns the first of n consecutive TCP ports on 127.0.0.1
// that were all free a moment ago (for `hottopic dev --cluster`, whose nodes
// take --nats-port and the ports after it).
func FreePortRun(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held := []net.Listener{first}
		port := first.Addr().(*net.TCPAddr).Port
		for i := 1; i < n; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+i))
			if err != nil {
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			_ = l.Close()
		}
		if len(held) == n {
			return port
		}
	}
	t.Fatalf("no %d consecutive free ports on 127.0.0.1 in 100 tries", n)
	return 0
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
