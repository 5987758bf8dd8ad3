package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/cli"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

// A stream's leader killed while `hottopic publish --count` runs: the events
// it was sent meanwhile get no answer until a new leader is elected; they
// are published again (each with its own Nats-Msg-Id, so none twice) and
// the command stores every one.
func TestPublishSurvivesStreamLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster of nats-server processes; skipped with -short")
	}
	g := NewWithT(t)
	t.Setenv("HOTTOPIC_NATS_URL", "")
	t.Setenv("VCAP_SERVICES", "")
	c := natstest.RunCluster(t, 3)
	ctx := context.Background()
	nc, err := nats.Connect(c.URLs())
	g.Expect(err).NotTo(HaveOccurred())
	defer nc.Close()
	js, err := jetstream.New(nc)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = provision.EnsureMapping(ctx, js, "app-1", "", "orders", mapping.Defaults(), provision.StreamOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	s, err := js.Stream(ctx, "HT_orders")
	g.Expect(err).NotTo(HaveOccurred())
	leader := c.Index(s.CachedInfo().Cluster.Leader)

	const n = 3000
	done := make(chan string, 1)
	var out, errb bytes.Buffer
	go func() {
		root := cli.NewRoot()
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetIn(strings.NewReader(""))
		root.SetArgs([]string{"publish", "orders", "o", "--nats", c.URLs(), "--count", "3000"})
		if err := root.Execute(); err != nil {
			done <- err.Error()
			return
		}
		done <- ""
	}()
	// Kill the leader once the stream holds some of the events.
	g.Eventually(func() uint64 {
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}, 30*time.Second).Should(BeNumerically(">=", 300))
	c.Kill(leader)
	var failure string
	g.Eventually(done, 90*time.Second).Should(Receive(&failure))
	g.Expect(failure).To(BeEmpty(), "publish failed; stdout: %s stderr: %s", out.String(), errb.String())
	g.Expect(out.String()).To(ContainSubstring("published 3000 events to orders"))

	c.Start(leader)
	g.Eventually(func() uint64 {
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}, 30*time.Second).Should(Equal(uint64(n)), "every event stored, none twice")
}
