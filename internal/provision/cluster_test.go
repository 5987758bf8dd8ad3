package provision_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// On a 3-node cluster, every event published once EnsureConsumer has
// returned reaches the consumer: the start of a mapping is exact, whichever
// node leads the stream or the consumer, and whichever node the publisher
// and the provisioner are connected to.
func TestClusterMappingStartIsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node nats-server cluster")
	}
	c := natstest.RunCluster(t, 3)
	connect := func(url string) jetstream.JetStream {
		nc, err := nats.Connect(url, nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		return js
	}
	var jss []jetstream.JetStream
	for _, nd := range c.Nodes {
		jss = append(jss, connect(nd.URL()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if got := (provision.StreamOptions{}).ReplicasFor(jss[0].Conn()); got != 3 {
		t.Fatalf("replicas on a 3-node cluster: %d, want 3", got)
	}

	t.Run("a consumer whose leader moves before its app ever pulled keeps its start", func(t *testing.T) {
		const events = 20
		for i := range 3 {
			tp := fmt.Sprintf("moved.t%d", i)
			if _, err := provision.EnsureTopicStream(ctx, jss[i], tp, provision.StreamOptions{}); err != nil {
				t.Fatal(err)
			}
			cons, err := provision.EnsureConsumer(ctx, jss[i], "app", "", tp, mapping.Defaults())
			if err != nil {
				t.Fatal(err)
			}
			for range events {
				if _, err := jss[(i+1)%3].Publish(ctx, tp, []byte("queued")); err != nil {
					t.Fatal(err)
				}
			}
			// The app is at zero instances: nothing pulled. Its consumer's leader moves.
			was := cons.CachedInfo().Cluster.Leader
			// Under load the request may go unanswered, or be refused while a
			// replica is not current: ask again until it steps down.
			for {
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := jss[0].Conn().RequestWithContext(rctx, fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", topic.StreamName(tp), topic.ConsumerName("app")), nil)
				rcancel()
				if err == nil && strings.Contains(string(resp.Data), `"success":true`) {
					break
				}
				if ctx.Err() != nil {
					if err == nil {
						err = errors.New(string(resp.Data))
					}
					t.Fatalf("consumer leader stepdown: %v", err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
			for {
				ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
				info, err := cons.Info(ictx)
				icancel()
				if err == nil && info.Cluster.Leader != "" && info.Cluster.Leader != was {
					break
				}
				if ctx.Err() != nil {
					t.Fatal("no new consumer leader")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got := drain(t, cons, events); got != events {
				t.Fatalf("%s: %d of %d queued events delivered after the consumer leader moved", tp, got, events)
			}
		}
	})

	t.Run("every event a new topic's stream acknowledges reaches the app mapped to it", func(t *testing.T) {
		for i := range 12 {
			tp := fmt.Sprintf("opening.t%d", i)
			var acked atomic.Int64
			stop := make(chan struct{})
			var pubs sync.WaitGroup
			// Publishers on every node at it from before the mapping, trying
			// again while no stream takes the topic, as ones told "map an
			// app first" would.
			for _, js := range jss {
				pubs.Add(1)
				go func() {
					defer pubs.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						_, err := js.Publish(ctx, tp, []byte("e"))
						switch {
						case err == nil:
							acked.Add(1)
						case errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders):
							time.Sleep(time.Millisecond) // back-off before trying again
						default:
							t.Error(err)
							return
						}
					}
				}()
			}
			cons, err := provision.EnsureMapping(ctx, jss[i%3], "app", "", tp, mapping.Defaults(), provision.StreamOptions{})
			if err != nil {
				close(stop)
				pubs.Wait()
				t.Fatal(err)
			}
			t.Logf("%s: %d acked when EnsureMapping returned", tp, acked.Load())
			for from := acked.Load(); acked.Load() < from+20; {
				time.Sleep(time.Millisecond) // twenty more after the mapping: nothing to await
			}
			close(stop)
			pubs.Wait()
			want := int(acked.Load())
			if got := drain(t, cons, want); got != want {
				t.Errorf("%s: %d events acknowledged by the stream, %d reached the app", tp, want, got)
			}
		}
	})

	const topics, events = 12, 20
	var mu sync.Mutex
	lost := map[string]int{}
	var wg sync.WaitGroup
	for i := range topics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp := fmt.Sprintf("exact.t%d", i)
			prov, pub := jss[i%3], jss[(i+1)%3]
			// Half the topics get a stream that exists (and already holds
			// an app) before the mapping; the other half a new one.
			if i%2 == 1 {
				if _, err := provision.EnsureTopicStream(ctx, prov, tp, provision.StreamOptions{}); err != nil {
					t.Error(err)
					return
				}
				if _, err := provision.EnsureConsumer(ctx, prov, "other-app", "", tp, mapping.Defaults()); err != nil {
					t.Error(err)
					return
				}
				for range 3 {
					if _, err := pub.Publish(ctx, tp, []byte("before")); err != nil {
						t.Error(err)
						return
					}
				}
			}
			if _, err := provision.EnsureTopicStream(ctx, prov, tp, provision.StreamOptions{}); err != nil {
				t.Error(err)
				return
			}
			cons, err := provision.EnsureConsumer(ctx, prov, "app", "", tp, mapping.Defaults())
			if err != nil {
				t.Error(err)
				return
			}
			for range events {
				if _, err := pub.Publish(ctx, tp, []byte("after")); err != nil {
					t.Error(err)
					return
				}
			}
			got := 0
			for got < events {
				batch, err := cons.Fetch(events-got, jetstream.FetchMaxWait(3*time.Second))
				if err != nil {
					t.Error(err)
					return
				}
				n := 0
				for m := range batch.Messages() {
					if string(m.Data()) == "after" {
						n++
					}
					_ = m.Ack()
				}
				if n == 0 {
					break // nothing more within 3 s: the rest is lost
				}
				got += n
			}
			if got != events {
				mu.Lock()
				lost[tp] = events - got
				mu.Unlock()
			}
			info, err := cons.Info(ctx)
			if err == nil && info.Config.Replicas != 0 && info.Config.Replicas != 3 {
				t.Errorf("%s: consumer replicas %d", topic.StreamName(tp), info.Config.Replicas)
			}
		}()
	}
	wg.Wait()
	if len(lost) > 0 {
		t.Fatalf("events published after EnsureConsumer returned never reached the consumer: %v", lost)
	}

	t.Run("the archive keeps every event, even those its app acked at once", func(t *testing.T) {
		const events = 20
		tp := "archived.fast"
		if _, err := provision.EnsureTopicStream(ctx, jss[0], tp, provision.StreamOptions{}); err != nil {
			t.Fatal(err)
		}
		cons, err := provision.EnsureConsumer(ctx, jss[1], "app", "", tp, mapping.Defaults())
		if err != nil {
			t.Fatal(err)
		}
		for range events {
			if _, err := jss[2].Publish(ctx, tp, []byte("e")); err != nil {
				t.Fatal(err)
			}
			m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		archive, err := jss[0].Stream(ctx, provision.ArchiveStreamName(tp))
		if err != nil {
			t.Fatal(err)
		}
		// The archive's source reaches the topic's last event (its consumer
		// holds each until copied); then it must hold all of them.
		for deadline := time.Now().Add(time.Minute); ; {
			info, err := archive.Info(ctx)
			if err == nil && len(info.Sources) == 1 && info.Sources[0].Seq >= events {
				if info.State.Msgs != events {
					t.Fatalf("archive holds %d of %d events", info.State.Msgs, events)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the archive did not copy the topic's events: %+v %v", info, err)
			}
			time.Sleep(50 * time.Millisecond) // polling server state: no event to await
		}
	})
}

// drain fetches and acks up to want events from cons and says how many it
// got: it stops early when nothing more comes within 2 s.
func drain(t *testing.T, cons jetstream.Consumer, want int) int {
	got := 0
	for got < want {
		batch, err := cons.Fetch(want-got, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			_ = m.Ack()
		}
		if n == 0 {
			break
		}
		got += n
	}
	return got
}
