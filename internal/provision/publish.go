package provision

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishCreating publishes msg and, when no stream answers for its subject,
// creates the stream with create and publishes once more. Creating on demand
// (rather than up front) keeps the common path to one round trip.
func publishCreating(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, create func(context.Context) error) (*jetstream.PubAck, error) {
	ack, err := js.PublishMsg(ctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if err = create(ctx); err != nil {
			return nil, err
		}
		ack, err = js.PublishMsg(ctx, msg)
	}
	return ack, err
}
