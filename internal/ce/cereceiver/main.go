// Command cereceiver is a function app made with the CloudEvents Go SDK's HTTP
// receiver, for tests of the sidecar against a client nobody on the project
// wrote. It listens on 127.0.0.1:$PORT and prints every event the SDK accepts
// as one line "EVENT <the event in the JSON format>" on stdout; the SDK
// answers what it answers to anything else.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cereceiver:", err)
		os.Exit(1)
	}
}

func run() error {
	l, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		return err
	}
	p, err := cehttp.New(cehttp.WithListener(l))
	if err != nil {
		return err
	}
	c, err := cloudevents.NewClient(p)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("listening on", l.Addr())
	return c.StartReceiver(ctx, func(e cloudevents.Event) cloudevents.Result {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		fmt.Println("EVENT " + string(b))
		return cloudevents.ResultACK
	})
}
