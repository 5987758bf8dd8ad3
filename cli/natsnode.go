package cli

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
)

// newNATSNodeCommand is the hidden `hottopic nats-node --config FILE`: one
// embedded nats-server run from a configuration file, as a process of its
// own. `hottopic dev --cluster` runs three of them.
func newNATSNodeCommand() *cobra.Command {
	var conf string
	cmd := &cobra.Command{
		Use:    "nats-node --config FILE",
		Short:  "Run one embedded NATS server from a configuration file (used by hottopic dev --cluster)",
		Args:   cobra.NoArgs,
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if conf == "" {
				return fmt.Errorf("--config is required")
			}
			opts, err := server.ProcessConfigFile(conf)
			if err != nil {
				return fmt.Errorf("%s: %v", conf, err)
			}
			opts.NoSigs = true
			srv, err := server.NewServer(opts)
			if err != nil {
				return fmt.Errorf("nats server: %v", err)
			}
			srv.ConfigureLogger()
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			srv.Start()
			if !srv.ReadyForConnections(30 * time.Second) {
				srv.Shutdown()
				return fmt.Errorf("nats server from %s not ready within 30s", conf)
			}
			<-sigs
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil
		},
	}
	cmd.Flags().StringVar(&conf, "config", "", "nats-server configuration file")
	return cmd
}
