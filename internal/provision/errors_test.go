package provision_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestNATSErrorSaysThePrefixOnce(t *testing.T) {
	api := &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}
	raw := fmt.Errorf("nats: %w", api) // what nats.go's PublishMsg returns for a refused publish
	got := provision.NATSError(raw)
	if want := "nats: API error: code=503 err_code=10077 description=maximum messages exceeded"; got.Error() != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	var ae *jetstream.APIError
	if !errors.As(got, &ae) || ae.ErrorCode != 10077 {
		t.Fatalf("the API error is no longer reachable through %v", got)
	}
	if plain := errors.New("nats: timeout"); provision.NATSError(plain) != plain {
		t.Fatal("an error said once is changed")
	}
	if provision.NATSError(nil) != nil {
		t.Fatal("nil is not nil")
	}
}

func TestARefusedDeadLetterSaysNATSOnce(t *testing.T) {
	ns := natstest.Run(t)
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg := provision.DLQStreamConfig(provision.StreamOptions{}, nil)
	cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardNew // full after one letter
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	l := provision.DeadLetter{App: "g1", Topic: "orders", Reason: "HTTP 400", Deliveries: 1, StreamSequence: 1, Data: []byte("x")}
	if _, err := provision.PublishDeadLetter(ctx, js, l, provision.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	l.StreamSequence = 2
	_, err = provision.PublishDeadLetter(ctx, js, l, provision.StreamOptions{})
	if err == nil {
		t.Fatal("a full dead-letter stream took the letter")
	}
	if strings.Contains(err.Error(), "nats: nats:") || !strings.Contains(err.Error(), "nats: API error") {
		t.Fatalf("error: %v", err)
	}
}
