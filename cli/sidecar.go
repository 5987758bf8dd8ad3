package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hottopic-io/hottopic/sidecar"
)

// newSidecarCommand is `hottopic sidecar`: the hottopic-sidecar binary's entry
// point, so the dev runtime can run an instance's sidecar from this binary.
func newSidecarCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "sidecar",
		Short:  "Run the event sidecar beside an app instance (configured from the environment)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			code := sidecar.Main(ctx, os.Getenv, os.Stdout)
			stop()
			if code != 0 {
				os.Exit(code) // the sidecar already logged its one-line reason
			}
			return nil
		},
	}
}
