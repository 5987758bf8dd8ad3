//go:build unix

package supervisor

import "syscall"

// KillGroup signals the process group led by pid: the instance's command
// and everything it started.
func KillGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
