package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/dev"
	"github.com/hottopic-io/hottopic/dev/state"
)

func newDevCommand() *cobra.Command {
	var o dev.Options
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a manifest's apps locally: embedded JetStream, the scaler, instances with their sidecars",
		Long: `Run the whole system on this machine from an ordinary Cloud Foundry manifest:
an embedded NATS JetStream server (state under --data-dir, so queued events survive
a restart), the service broker making an event bus for each service the apps list
(and one for the apps that list none) and binding each app to its buses, the scaler
on a local platform, and each app instance as local processes with its own PORT,
VCAP_APPLICATION, VCAP_SERVICES (its bindings) and sidecar. Mapped apps scale with
their backlog, down to zero. With --nats or --cluster there is one bus and no
broker. Ctrl-C stops everything cleanly.`,
		Example: `  hottopic dev -f examples/wordcount/manifest.yml
  hottopic publish words "the quick brown fox" --count 500   # in a second terminal
  hottopic publish orders.created '{"id":1}' --service orders-bus   # the bus of service orders-bus`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			abort := make(chan struct{})
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			go func() {
				<-sigs
				cancel()
				<-sigs
				close(abort)
			}()
			o.Out = cmd.OutOrStdout()
			return dev.Run(ctx, o, abort)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Manifest, "manifest", "f", "manifest.yml", "Cloud Foundry manifest of the apps to run")
	f.StringVar(&o.DataDir, "data-dir", state.DefaultDir, "where JetStream keeps its files and the running runtime records itself")
	f.IntVar(&o.NATSPort, "nats-port", dev.DefaultNATSPort, "port of the embedded NATS server on 127.0.0.1")
	f.StringVar(&o.NATSURL, "nats", "", "use this NATS JetStream server instead of an embedded one")
	f.BoolVar(&o.Cluster, "cluster", false, "run a 3-node embedded JetStream cluster (each node its own process, on --nats-port and the two ports after it) instead of one server")
	f.StringVar(&o.EnvFile, "env-file", "", "file of KEY=VALUE lines added to every app's environment")
	f.DurationVar(&o.PollInterval, "poll-interval", dev.DefaultPollInterval, "how often the scaler reads lag")
	f.DurationVar(&o.DiscoveryInterval, "discovery-interval", dev.DefaultDiscoveryInterval, "how often the scaler reads mappings")
	f.DurationVar(&o.GracePeriod, "grace-period", 10*time.Second, "how long a process may take to stop after SIGTERM")
	for _, hidden := range []string{"poll-interval", "discovery-interval", "grace-period"} {
		_ = f.MarkHidden(hidden)
	}
	return cmd
}
