package dev

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/dev/console"
	"github.com/hottopic-io/hottopic/dev/state"
)

// startNATS runs the embedded JetStream server on 127.0.0.1:port with file
// storage under dataDir, so queued events survive a restart.
func startNATS(dataDir string, port int, con *console.Console) (*server.Server, error) {
	return startNATSConf(dataDir, port, "", con)
}

// startNATSConf is startNATS running the configuration file conf that
// `hottopic-broker init` wrote (operator mode, accounts in its resolver
// directory), on this address and storage.
func startNATSConf(dataDir string, port int, conf string, con *console.Console) (*server.Server, error) {
	// The server reports a busy port only in its log; say it plainly first.
	l, err := net.Listen("tcp", net.JoinHostPort(state.NATSHost, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("port %d on 127.0.0.1 is in use (another hottopic dev or NATS server?): choose another with --nats-port, or use that server with --nats nats://127.0.0.1:%d", port, port)
		}
		return nil, fmt.Errorf("cannot listen on 127.0.0.1:%d: %v", port, err)
	}
	l.Close()
	store, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{}
	if conf != "" {
		if opts, err = server.ProcessConfigFile(conf); err != nil {
			return nil, fmt.Errorf("embedded NATS server: %v", err)
		}
		// Each bus account reserves its JetStream limits (broker.BusDiskStorage,
		// BusMemoryStorage) against the server's. Left to itself the server
		// derives them from this process's memory limit (MemoryLimit) and
		// the free disk, which would refuse a second bus on a laptop;
		// locally the reservations are bookkeeping, so make room for many.
		opts.JetStreamMaxMemory = 64 * broker.BusMemoryStorage
		opts.JetStreamMaxStore = 64 * broker.BusDiskStorage
	}
	opts.ServerName = "hottopic-dev"
	opts.Host, opts.Port = state.NATSHost, port
	opts.JetStream, opts.StoreDir = true, store
	opts.NoSigs = true
	opts.MaxPayload = 8 << 20
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %v", err)
	}
	srv.SetLoggerV2(natsLogger{con}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start on 127.0.0.1:%d within 15s (is %s usable?)", port, store)
	}
	return srv, nil
}

// natsLogger shows the server's warnings and errors; its routine notices
// would drown the apps' output.
type natsLogger struct{ c *console.Console }

const natsSource = "[HOTTOPIC/NATS]"

func (natsLogger) Noticef(string, ...any) {}
func (natsLogger) Debugf(string, ...any)  {}
func (natsLogger) Tracef(string, ...any)  {}
func (l natsLogger) Warnf(format string, v ...any) {
	l.c.Printf(natsSource, "warning: "+format, v...)
}
func (l natsLogger) Errorf(format string, v ...any) {
	l.c.Printf(natsSource, "error: "+format, v...)
}
func (l natsLogger) Fatalf(format string, v ...any) {
	l.c.Printf(natsSource, "fatal: "+format, v...)
}
