// Command hottopic is the Hot Topic CLI (map-event, unmap-event, events,
// publish, dev) and, run by the cf CLI, its plugin.
package main

import (
	"os"

	"github.com/hottopic-io/hottopic/cli"
)

func main() {
	// cf runs its plugins as `hottopic RPC-PORT COMMAND ARGS…`.
	if cli.IsPluginCall(os.Args) {
		os.Exit(cli.RunPlugin())
	}
	os.Exit(cli.Main(os.Args))
}
