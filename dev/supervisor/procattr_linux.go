package supervisor

import "syscall"

// SysProcAttr puts every process in its own group (Ctrl-C in the terminal
// reaches only the dev runtime, which stops instances in order) and has the
// kernel kill it if the dev runtime itself dies without cleaning up.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
