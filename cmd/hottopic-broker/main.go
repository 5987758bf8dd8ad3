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
	"path/filepath"
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
                                  write DIR/nats-server.conf, DIR/broker.env, DIR/scaler.env
  hottopic-broker init --cluster HOST:PORT,HOST:PORT,HOST:PORT DIR
                                  the same for a cluster: DIR/hottopic-N/nats-server.conf per node
                                  (routes on PORT+2000, monitoring on 127.0.0.1:PORT+4000)`

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
	cluster := fs.String("cluster", "", "every node's client address HOST:PORT, comma-separated: writes one configuration per node")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("init takes one directory: hottopic-broker init [--port N] [--url nats://HOST:PORT] DIR")
	}
	clusterSet := false
	fs.Visit(func(f *flag.Flag) { clusterSet = clusterSet || f.Name == "cluster" })
	if clusterSet {
		return initClusterCmd(fs, *cluster)
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

// initClusterCmd is init --cluster; --port and --url belong to one server.
func initClusterCmd(fs *flag.FlagSet, spec string) error {
	var conflict error
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "port" || f.Name == "url" {
			conflict = fmt.Errorf("--%s is for one server: with --cluster, each node's HOST:PORT gives its address", f.Name)
		}
	})
	if conflict != nil {
		return conflict
	}
	nodes, err := broker.ParseCluster(spec)
	if err != nil {
		return err
	}
	dir := fs.Arg(0)
	if err := broker.InitCluster(dir, nodes); err != nil {
		return err
	}
	fmt.Printf("wrote %[1]s/broker.env, %[1]s/scaler.env, %[1]s/operator.nk (keep it offline) and one directory per node:\n", dir)
	for i, n := range nodes {
		fmt.Printf("  %s (%s): nats-server -c %s\n", broker.ClusterNodeDir(dir, i), n.URL(), filepath.Join(broker.ClusterNodeDir(dir, i), broker.ServerConfFile))
	}
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
