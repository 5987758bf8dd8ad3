// Package cli is the hottopic command line: the standalone commands and the
// same commands served as a cf CLI plugin.
package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Version is stamped at build time (-ldflags -X).
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
