//go:build unix

package appconn

import (
	"net"
	"syscall"
)

// alive peeks without blocking: a reused connection the app has closed
// (idle timeout, restart) reads EOF or an error; a live idle one has nothing.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = true
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		case err != nil || n == 0:
			ok = false // error or EOF
		default:
			ok = false // unasked data: the stream is out of step
		}
		return true // never wait for readiness
	})
	return ok && err == nil
}
