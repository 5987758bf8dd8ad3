package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/natstest"
)

func TestClusterKillsAndRestartsNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-server processes")
	}
	t0 := time.Now()
	c := natstest.RunCluster(t, 3)
	t.Logf("cluster up in %s", time.Since(t0))
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := len(nc.Servers()); got != 3 {
		t.Fatalf("the client knows %d servers, want 3", got)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	leader := s.CachedInfo().Cluster.Leader
	i := c.Index(leader)
	c.Kill(i)
	if c.Running(i) {
		t.Fatal("killed node still running")
	}
	for {
		// Each try bounded on its own: a request lost while the leader is
		// elected would otherwise wait out the whole test's deadline.
		try, cancelTry := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(try, "t", []byte("x"), jetstream.WithMsgID("after-kill"))
		cancelTry()
		if err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("no publish after the stream leader died: %v", err)
		}
	}
	t.Logf("published after the kill at %s", time.Since(t0))
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster.Leader == leader || info.Cluster.Leader == "" {
		t.Fatalf("stream leader after the kill: %q", info.Cluster.Leader)
	}
	c.Start(i)
	c.WaitHealthy()
	t.Logf("whole again at %s", time.Since(t0))
	if c.MetaLeader() == "" {
		t.Fatal("no meta leader once whole")
	}
}
