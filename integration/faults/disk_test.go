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
	mounts, stores := tmpfsStores(t)
	sys := setup(t, stores)
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
	sys.settleChecked(t, fault+"-stream-leader", ids, start)
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
	sys.settleChecked(t, fault+"-repaired-after-restart", ids, time.Now())
	Expect(replicaCurrent(sys, name)).To(Succeed())
}

// TestNodeDiskReadOnly brings the events stream's leader back on a read-only
// disk while events flow: the node is killed, its store remounted read-only
// (a file system cannot be remounted read-only under a server that holds
// files on it open for writing: EBUSY) and started again. nats-server
// refuses to run JetStream on a store it cannot write and exits; the other
// two carry on, and every event published meanwhile reaches the app before
// the disk is made writable and the node started again, after which its
// replica catches up. Needs root (mount); skipped without.
func TestNodeDiskReadOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node nats-server cluster with a read-only disk")
	}
	Expect := NewWithT(t).Expect
	Eventually := NewWithT(t).Eventually
	mounts, stores := tmpfsStores(t)
	sys := setup(t, stores)
	c := sys.cluster

	const fault = "disk-read-only"
	name := streamLeader(sys)
	Expect(name).NotTo(BeEmpty(), "the events stream's leader")
	victim := c.Index(name)
	start := time.Now()
	ids := sys.publish(t, fault, diskEvents, func(i int) {
		switch i {
		case diskEvents / 3:
			t.Logf("%s: %s (the stream leader) killed, its store remounted read-only, started again", fault, name)
			c.Kill(victim)
			Expect(remount(mounts[victim], syscall.MS_RDONLY)).To(Succeed())
			err := c.TryStart(victim)
			Expect(err).To(MatchError(ContainSubstring("storage directory is not writable")), "the node refuses a read-only store")
		case 2 * diskEvents / 3:
			// The other two carry on: what was published so far is delivered
			// while the node is still down.
			sent := make([]string, i)
			for j := range sent {
				sent[j] = fmt.Sprintf("%s-%d", fault, j)
			}
			Eventually(func() int { d, _ := sys.app.count(sent); return d }, 60*time.Second, 20*time.Millisecond).
				Should(Equal(i), "events published with a node on a read-only disk are delivered by the other two")
			Expect(c.Running(victim)).To(BeFalse())
			Expect(remount(mounts[victim], 0)).To(Succeed())
			c.Start(victim)
		}
	})
	c.WaitHealthy()
	sys.settleChecked(t, fault, ids, start)
	Eventually(func() error { return replicaCurrent(sys, name) }, 60*time.Second, 100*time.Millisecond).Should(Succeed())
}

// tmpfsStores mounts a 64 MB tmpfs for each node's JetStream store (unmounted
// when the test ends, after the nodes are killed) and returns the mount points
// and the cluster option that puts the stores there. It skips the test when
// mount is not permitted (not root).
func tmpfsStores(t *testing.T) ([3]string, natstest.ClusterOption) {
	base := t.TempDir()
	var mounts [3]string
	for i := range mounts {
		mounts[i] = filepath.Join(base, fmt.Sprintf("fs%d", i+1))
		if err := os.Mkdir(mounts[i], 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", mounts[i], "tmpfs", 0, "size=64m"); err != nil {
			t.Skipf("cannot mount a tmpfs for a node's store (needs root): %v", err)
		}
		m := mounts[i]
		t.Cleanup(func() { _ = syscall.Unmount(m, syscall.MNT_DETACH) })
	}
	return mounts, natstest.StoreDirs(func(i int) string { return filepath.Join(mounts[i], "jetstream") })
}

// remount remounts the tmpfs at mount with flags (syscall.MS_RDONLY, or 0
// for read-write); its contents stay.
func remount(mount string, flags uintptr) error {
	return syscall.Mount("tmpfs", mount, "tmpfs", syscall.MS_REMOUNT|flags, "size=64m")
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
