package pull_test

// Issue 14 asks to re-weigh the own pull loop against nats.go's, once batches
// exist, at batch 1 and 100 (a window of 1 and of 100 events), in the same
// run. Both consume b.N pre-loaded 128 B events from one durable consumer of
// an embedded server and ack each as it arrives: the own Puller (acks carry
// the next pull request) and jetstream's Consumer.Messages with
// PullMaxMessages set to the window.
//
//	go test -run '^$' -bench Consume -benchmem -count 5 ./sidecar/internal/pull/

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/sidecar/internal/pull"
)

// preload makes a stream holding n events and a durable consumer on it.
func preload(b *testing.B, nc *nats.Conn, n int) jetstream.Consumer {
	b.Helper()
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench"}})
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 128)
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync("bench", data); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "app", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 10000,
	})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkConsume(b *testing.B) {
	for _, window := range []int{1, 100} {
		b.Run(fmt.Sprintf("own/window=%d", window), func(b *testing.B) {
			nc := natstest.Run(b).Connect()
			preload(b, nc, b.N)
			out := make(chan *pull.Msg, window)
			b.ResetTimer()
			p, err := pull.Start(nc, pull.Config{Stream: "BENCH", Consumer: "app", Window: window, AckWait: 30 * time.Second}, out, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Stop()
			for range b.N {
				if err := p.AckDone(<-out); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("nats.go/window=%d", window), func(b *testing.B) {
			nc := natstest.Run(b).Connect()
			c := preload(b, nc, b.N)
			b.ResetTimer()
			it, err := c.Messages(jetstream.PullMaxMessages(window))
			if err != nil {
				b.Fatal(err)
			}
			defer it.Stop()
			for n := 0; n < b.N; {
				m, err := it.Next()
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					continue // the iterator goes on; nats.go reports it so a caller may log it
				}
				if err != nil {
					b.Fatal(err)
				}
				n++
				if err := m.Ack(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
