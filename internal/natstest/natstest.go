// Package natstest runs a real, embedded JetStream server for tests, with file
// storage that survives a Restart on the same port.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is an embedded nats-server with JetStream.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// Option adjusts the server options before start (auth, TLS...).
type Option func(*server.Options)

// Run starts a server on a random loopback port with file storage in a temp
// dir, and stops it when the test ends.
func Run(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	for _, f := range opts {
		f(&o)
	}
	s := &Server{t: t, opts: o}
	s.start()
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	o := s.opts // NewServer keeps a pointer; give each start its own copy
	srv, err := server.NewServer(&o)
	if err != nil {
		s.t.Fatalf("nats server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("nats server not ready within 10s")
	}
	s.srv = srv
	// Keep the port for restarts: clients reconnect to the same URL.
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
}

// URL is the client URL, e.g. nats://127.0.0.1:41234.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Port is the client port.
func (s *Server) Port() int { return s.opts.Port }

// Server gives access to the embedded server.
func (s *Server) Server() *server.Server { return s.srv }

// Shutdown stops the server (idempotent).
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// Restart stops and starts the server on the same port and store directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.start()
}

// Connect returns a client connection closed at the end of the test.
func (s *Server) Connect(opts ...nats.Option) *nats.Conn {
	s.t.Helper()
	nc, err := nats.Connect(s.URL(), opts...)
	if err != nil {
		s.t.Fatalf("connect to nats: %v", err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}
