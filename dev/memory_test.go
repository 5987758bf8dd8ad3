package dev

import (
	"context"
	"fmt"
	"io"
	goruntime "runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/dev/console"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

// The dev process bounds its heap unless GOMEMLIMIT says otherwise.
func TestBoundMemory(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(1 << 40)
	boundMemory()
	if got := debug.SetMemoryLimit(-1); got != MemoryLimit {
		t.Fatalf("memory limit %d, want %d", got, MemoryLimit)
	}

	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetMemoryLimit(1 << 30)
	boundMemory()
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Fatalf("GOMEMLIMIT=1GiB: memory limit %d, want it kept", got)
	}
}

// After a burst of events published with Nats-Msg-Ids, what the embedded
// server keeps for the burst goes once the runtime's duplicate window and
// the file store's cache expiry (10 s each) have passed: the backlog itself
// costs the process next to nothing. With the server's default window
// (2 min) the ids, about 15 MB here, stay for two minutes.
func TestBurstMemoryIsLetGo(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 150 000 events and awaits their ids' expiry")
	}
	srv, err := startNATS(t.TempDir(), proctest.FreePort(t), console.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512))
	if err != nil {
		t.Fatal(err)
	}
	so, err := streamOptions(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// An app at zero instances: the burst stays queued.
	if _, err := provision.EnsureTopicStream(ctx, js, "burst", so); err != nil {
		t.Fatal(err)
	}
	if _, err := provision.EnsureConsumer(ctx, js, "app-1", "app", "burst", mapping.Defaults()); err != nil {
		t.Fatal(err)
	}
	base := liveHeap()

	const events = 150_000
	data := make([]byte, 100)
	pending := make([]jetstream.PubAckFuture, 0, 512)
	await := func() {
		for _, f := range pending {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatal(err)
			}
		}
		pending = pending[:0]
	}
	for i := range events {
		m := nats.NewMsg("burst")
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("burst-event-%d", i))
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		if pending = append(pending, f); len(pending) == cap(pending) {
			await()
		}
	}
	await()
	t.Logf("live heap: %.1f MB before the burst, %.1f MB after it", mb(base), mb(liveHeap()))

	// Far from both: the bound lets go of it after 10 s, the default after 120 s.
	const letGoWithin = 60 * time.Second
	limit := base + 8<<20
	deadline := time.Now().Add(letGoWithin)
	for {
		live := liveHeap()
		if live < limit {
			t.Logf("live heap %.1f MB once the window passed", mb(live))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live heap still %.1f MB %s after the burst (%.1f MB before it): the server keeps what the burst left", mb(live), letGoWithin, mb(base))
		}
		time.Sleep(time.Second) // polling the heap: there is nothing to await
	}
	s, err := js.Stream(ctx, "HT_burst")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != events {
		t.Fatalf("the backlog holds %d events, want %d", got, events)
	}
}

// liveHeap is the heap still reachable, after collecting twice (the file
// store's buffer pools are emptied over two collections).
func liveHeap() uint64 {
	var ms goruntime.MemStats
	goruntime.GC()
	goruntime.GC()
	goruntime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
