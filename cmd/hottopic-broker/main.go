// Command hottopic-broker is Hot Topic's Open Service Broker: a service
// instance is an isolated event bus (a NATS account), a binding scoped
// credentials for one app. `hottopic-broker init DIR` writes the NATS server
// configuration and the broker's and scaler's environment, offline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/internal/cfenv"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hottopic-broker:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  hottopic-broker                 serve the Open Service Broker API on $PORT (default 8080)
  hottopic-broker init [--port N] [--url nats://HOST:PORT] DIR
                                  write DIR/nats-server.conf, DIR/broker.env, DIR/scaler.env`

func run(args []string) error {
	if len(args) > 0 && args[0] == "init" {
		return initCmd(args[1:])
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown argument %q (usage: hottopic-broker, or hottopic-broker init [--port N] [--url nats://HOST:PORT] DIR)", args[0])
	}
	return serve()
}

func initCmd(args []string) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	port := fs.Int("port", 4222, "the port nats-server listens on")
	url := fs.String("url", "", "the NATS URL broker and scaler connect to (default nats://127.0.0.1:PORT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("init takes one directory: hottopic-broker init [--port N] [--url nats://HOST:PORT] DIR")
	}
	if _, err := cfenv.ParsePort("--port", strconv.Itoa(*port), 1); err != nil {
		return err
	}
	if err := broker.Init(fs.Arg(0), broker.InitOptions{NATSURL: *url, Port: *port}); err != nil {
		return err
	}
	fmt.Printf("wrote %[1]s/nats-server.conf, %[1]s/broker.env, %[1]s/scaler.env and %[1]s/operator.nk (keep it offline)\nstart the server: nats-server -c %[1]s/nats-server.conf\n", fs.Arg(0))
	return nil
}

func serve() error {
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	port, err := cfenv.Port(os.Getenv, "PORT", 8080)
	if err != nil {
		return err
	}
	cfg, err := broker.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	b, err := broker.New(startCtx, cfg, log)
	cancel()
	if err != nil {
		return err
	}
	defer b.Close()
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Info("hottopic-broker ready", "listen", ln.Addr().String(), "nats", cfg.NATS.String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
