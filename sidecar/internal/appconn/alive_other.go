//go:build !unix

package appconn

import "net"

// peeker cannot peek here; a connection the app closed fails the next Post.
type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

func (p *peeker) alive() bool { return true }
