//go:build unix

package supervisor

import "syscall"

// killGroup signals the process group led by pid: the instance's command
// and everything it started.
func killGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
