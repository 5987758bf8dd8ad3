//go:build unix

package appconn

import (
	"net"
	"syscall"
)

// peeker checks without blocking whether an idle connection is still open.
// Made once per connection, so the check allocates nothing.
type peeker struct {
	rc   syscall.RawConn
	ok   bool
	buf  [1]byte
	peek func(fd uintptr) bool
}

func newPeeker(nc net.Conn) *peeker {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{rc: rc}
	p.peek = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read is the only healthy answer: EOF means the app
		// closed it (idle timeout, restart), data means it is out of step.
		p.ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR
		return true // never wait for readiness
	}
	return p
}

// alive reports whether the app has neither closed the connection nor sent
// anything unasked.
func (p *peeker) alive() bool {
	if p == nil {
		return true
	}
	p.ok = false
	if err := p.rc.Read(p.peek); err != nil {
		return false
	}
	return p.ok
}
