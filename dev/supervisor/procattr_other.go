//go:build unix && !linux

package supervisor

import "syscall"

// SysProcAttr puts every process in its own group, so Ctrl-C in the
// terminal reaches only the dev runtime, which stops instances in order.
func SysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
