// Command hottopic is the Hot Topic CLI (map-event, unmap-event, events,
// publish, dev) and, run by the cf CLI, its plugin.
package main

import (
	"os"

	"github.com/hottopic-io/hottopic/cli"
)

func main() { os.Exit(cli.Main(os.Args)) }
