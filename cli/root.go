// Package cli is the hottopic command line: the standalone commands and the
// same commands served as a cf CLI plugin.
package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Version is stamped at build time by scripts/release.sh:
// -ldflags "-X github.com/hottopic-io/hottopic/cli.Version=1.2.3". It is what
// `hottopic --version` and `hottopic version` print and, as X.Y.Z, the
// plugin's version in `cf plugins`.
var Version = "dev"

// NewRoot builds the command tree.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "hottopic",
		Short:         "Event-driven functions on Cloud Foundry",
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(cfCommands(openCFHome, true)...)
	root.AddCommand(newDevCommand())
	root.AddCommand(newPublishCommand())
	root.AddCommand(newMigrateStreamsCmd())
	root.AddCommand(newSidecarCommand())
	root.AddCommand(newVersionCommand())
	root.SetVersionTemplate(versionLine() + "\n")
	root.AddCommand(newNATSNodeCommand())
	return root
}

// Main runs the CLI and returns the process exit code. Errors are one line.
func Main(args []string) int {
	root := NewRoot()
	root.SetArgs(args[1:])
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", oneLine(err))
		return 1
	}
	return 0
}

func versionLine() string { return "hottopic version " + Version }

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of hottopic (the same as --version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return nil
		},
	}
}
