//go:build unix

package state

import (
	"errors"
	"syscall"
)

// alive reports whether a process with that pid exists (EPERM: it does, but
// belongs to someone else).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
