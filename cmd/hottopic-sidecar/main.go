// Command hottopic-sidecar runs beside an app instance and delivers the app's
// topic events to it over local HTTP. See package sidecar.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hottopic-io/hottopic/sidecar"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := sidecar.Main(ctx, os.Getenv, os.Stdout)
	stop()
	os.Exit(code)
}
