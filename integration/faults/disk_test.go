package faults_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// diskEvents per phase of the full-disk test: a few hundred keep it lean.
const diskEvents = 300

// TestNodeDiskFull gives each node its JetStream store on a small tmpfs of
// its own, fills the one under the events stream's leader while events flow,
// and checks that nothing is lost while the other two keep quorum. A
// nats-server that meets "no space left on device" shuts JetStream down on
// that node and keeps it down; once space is freed, a restart brings it back
// and its replica catches up. Needs root (mount); skipped without.
//
// A read-only disk is not tried apart: the kernel refuses to remount a file
// system read-only while the server holds files on it open for writing
// (EBUSY), and chmod does not stop root. A full disk is the same stop of
// every write.
func TestNodeDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node nats-server cluster with a full disk")
	}
	diskFault(t, "disk-full", func(mount string) {
		n, err := fill(filepath.Join(mount, "filler"))
		NewWithT(t).Expect(err).To(MatchError(syscall.ENOSPC), "filled up to the last byte")
		t.Logf("wrote %d MB; the file system is full", n>>20)
	}, func(mount string) {
		NewWithT(t).Expect(os.Remove(filepath.Join(mount, "filler"))).To(Succeed())
	})
}

// diskFault gives each node its store on a tmpfs of its own, breaks the one
// under the events stream's leader with inject while events flow, checks
// nothing is lost and the node reports the fault, then repairs it, restarts
// the node and checks its replica catches up.
func diskFault(t *testing.T, fault string, inject, repair func(mount string)) {
	Expect := NewWithT(t).Expect
	Eventually := NewWithT(t).Eventually
	base := t.TempDir()
	var mounts [3]string
	for i := range mounts {
		mounts[i] = filepath.Join(base, fmt.Sprintf("fs%d", i+1))
		Expect(os.Mkdir(mounts[i], 0o755)).To(Succeed())
		if err := syscall.Mount("tmpfs", mounts[i], "tmpfs", 0, "size=64m"); err != nil {
			t.Skipf("cannot mount a tmpfs for a node's store (needs root): %v", err)
		}
		m := mounts[i]
		t.Cleanup(func() { _ = syscall.Unmount(m, syscall.MNT_DETACH) }) // after the nodes are killed
	}
	sys := setup(t, natstest.StoreDirs(func(i int) string { return filepath.Join(mounts[i], "jetstream") }))
	c := sys.cluster

	name := streamLeader(sys)
	Expect(name).NotTo(BeEmpty(), "the events stream's leader")
	victim := c.Index(name)
	start := time.Now()
	ids := sys.publish(t, fault, diskEvents, func(i int) {
		if i == diskEvents/3 {
			t.Logf("%s: the store of %s (the stream leader)", fault, name)
			inject(mounts[victim])
		}
	})
	// The fault took: the node's JetStream went down.
	Eventually(func() int { code, _ := c.Healthz(victim); return code }, 30*time.Second, 50*time.Millisecond).
		ShouldNot(Equal(200), "the full node reports JetStream unhealthy")
	f := sys.settle(t, fault+"-stream-leader", ids, start)
	report(t, f)
	Expect(f.Lost).To(BeZero())
	Expect(f.Duplicated).To(BeNumerically("<=", inFlightPerKill), "duplicates beyond what was in flight when the node stopped")
	Expect(streamLeader(sys)).NotTo(BeEmpty(), "the other two nodes elected a leader")
	Expect(streamLeader(sys)).NotTo(Equal(name), "the full node no longer leads")

	// Repaired: JetStream stays down on that node until it restarts (the
	// server shut it down); a restart on the same store brings it back.
	repair(mounts[victim])
	code, body := c.Healthz(victim)
	t.Logf("%s repaired, before a restart: /healthz %d %s", name, code, body)
	c.Kill(victim)
	c.Start(victim)
	c.WaitHealthy()
	Eventually(func() error { return replicaCurrent(sys, name) }, 60*time.Second, 100*time.Millisecond).Should(Succeed())

	ids = sys.publish(t, fault+"-repaired", diskEvents/3, nil)
	f = sys.settle(t, fault+"-repaired-after-restart", ids, time.Now())
	report(t, f)
	Expect(f.Lost).To(BeZero())
	Expect(replicaCurrent(sys, name)).To(Succeed())
}

// fill writes zeros to path until the file system refuses; it returns how
// many bytes were written and the error that stopped it.
func fill(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return n, err
		}
	}
}

// replicaCurrent says whether node name holds a current copy of the events
// stream.
func replicaCurrent(sys *system, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := sys.js.Stream(ctx, topic.StreamName(eventsTopic))
	if err != nil {
		return err
	}
	ci := s.CachedInfo().Cluster
	if ci == nil {
		return fmt.Errorf("no cluster info")
	}
	if ci.Leader == name {
		return nil
	}
	for _, r := range ci.Replicas {
		if r.Name == name {
			if !r.Current || r.Offline {
				return fmt.Errorf("replica on %s: current %v, offline %v, lag %d", name, r.Current, r.Offline, r.Lag)
			}
			return nil
		}
	}
	return fmt.Errorf("no replica on %s (leader %s)", name, ci.Leader)
}
