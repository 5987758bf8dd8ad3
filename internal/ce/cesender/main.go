// Command cesender publishes one CloudEvent with the CloudEvents Go SDK, for
// tests of Hot Topic against a client nobody on the project wrote. The event
// is read from stdin in the JSON event format.
//
//	cesender nats URL STREAM SUBJECT binary|structured   the SDK's JetStream sender
//	cesender http TARGET binary|structured               the SDK's HTTP sender
//
// It prints "ACK" when the SDK says the event was accepted, else the SDK's
// result on stderr, and exits 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	nats_jetstream "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/client"
)

const usage = "usage: cesender nats URL STREAM SUBJECT binary|structured | cesender http TARGET binary|structured"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "cesender:", err)
		os.Exit(1)
	}
	fmt.Println("ACK")
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("%s", usage)
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var e cloudevents.Event
	if err := json.Unmarshal(in, &e); err != nil {
		return fmt.Errorf("the event on stdin: %v", err)
	}
	ctx := context.Background()
	var c client.Client
	mode := args[len(args)-1]
	switch {
	case args[0] == "nats" && len(args) == 5:
		s, err := nats_jetstream.NewSender(args[1], args[2], args[3], nil, nil)
		if err != nil {
			return err
		}
		defer s.Close(ctx)
		if c, err = cloudevents.NewClient(s); err != nil {
			return err
		}
	case args[0] == "http" && len(args) == 3:
		if c, err = cloudevents.NewClientHTTP(); err != nil {
			return err
		}
		ctx = cloudevents.ContextWithTarget(ctx, args[1])
	default:
		return fmt.Errorf("%s", usage)
	}
	switch mode {
	case "binary":
		ctx = binding.WithForceBinary(ctx)
	case "structured":
		ctx = binding.WithForceStructured(ctx)
	default:
		return fmt.Errorf("%s", usage)
	}
	if res := c.Send(ctx, e); !cloudevents.IsACK(res) {
		return fmt.Errorf("not accepted: %v", res)
	}
	return nil
}
