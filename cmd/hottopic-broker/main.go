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
	"strings"
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
  hottopic-broker init [--tls] [--port N] [--url nats://HOST:PORT] DIR
                                  write DIR/nats-server.conf, DIR/broker.env, DIR/scaler.env
  hottopic-broker init [--tls] --cluster HOST:PORT,HOST:PORT,HOST:PORT DIR
                                  the same for a cluster: DIR/hottopic-N/nats-server.conf per node
                                  (routes on PORT+2000, monitoring on 127.0.0.1:PORT+4000)
  --tls: clients and routes over TLS, with a CA made in DIR/tls (keep ca-key.pem offline)`

func run(args []string) error {
	if len(args) > 0 && args[0] == "init" {
		return initCmd(args[1:])
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown argument %q (usage: hottopic-broker, or hottopic-broker init [--tls] [--port N] [--url nats://HOST:PORT] DIR)", args[0])
	}
	return serve()
}

func initCmd(args []string) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	port := fs.Int("port", 4222, "the port nats-server listens on")
	url := fs.String("url", "", "the NATS URL broker and scaler connect to (default nats://127.0.0.1:PORT)")
	cluster := fs.String("cluster", "", "every node's client address HOST:PORT, comma-separated: writes one configuration per node")
	withTLS := fs.Bool("tls", false, "clients (and a cluster's routes) over TLS, with a CA and certificates made in DIR/tls")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("init takes one directory: hottopic-broker init [--tls] [--port N] [--url nats://HOST:PORT] DIR")
	}
	clusterSet := false
	fs.Visit(func(f *flag.Flag) { clusterSet = clusterSet || f.Name == "cluster" })
	if clusterSet {
		return initClusterCmd(fs, *cluster, *withTLS)
	}
	if _, err := cfenv.ParsePort("--port", strconv.Itoa(*port), 1); err != nil {
		return err
	}
	if err := broker.Init(fs.Arg(0), broker.InitOptions{NATSURL: *url, Port: *port, TLS: *withTLS}); err != nil {
		return err
	}
	fmt.Printf("wrote %[1]s/nats-server.conf, %[1]s/broker.env, %[1]s/scaler.env and %[1]s/operator.nk (keep it offline)\n", fs.Arg(0))
	printTLS(fs.Arg(0), *withTLS)
	fmt.Printf("start the server: nats-server -c %s/nats-server.conf\n", fs.Arg(0))
	return nil
}

// printTLS names what init --tls wrote besides.
func printTLS(dir string, withTLS bool) {
	if withTLS {
		fmt.Printf("and %[1]s: the CA (%[2]s, and %[3]s: keep it offline, it only issues new certificates) and the servers' certificates\n",
			filepath.Join(dir, broker.TLSDir), broker.CACertFile, broker.CAKeyFile)
	}
}

// initClusterCmd is init --cluster; --port and --url belong to one server.
func initClusterCmd(fs *flag.FlagSet, spec string, withTLS bool) error {
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
	if err := broker.InitCluster(dir, nodes, withTLS); err != nil {
		return err
	}
	fmt.Printf("wrote %[1]s/broker.env, %[1]s/scaler.env, %[1]s/operator.nk (keep it offline) and one directory per node:\n", dir)
	for i, n := range nodes {
		u := n.URL()
		if withTLS {
			u = strings.Replace(u, "nats://", "tls://", 1)
		}
		fmt.Printf("  %s (%s): nats-server -c %s\n", broker.ClusterNodeDir(dir, i), u, filepath.Join(broker.ClusterNodeDir(dir, i), broker.ServerConfFile))
	}
	printTLS(dir, withTLS)
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
