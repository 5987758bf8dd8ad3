package scaler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
)

// Leader election: one key in a KV bucket whose TTL makes a dead leader's
// claim expire. The leader renews every TTL/3 with a compare-and-set on the
// key's revision; it stops acting on its own once 2/3 of the TTL passed
// without a renewal, before anyone else can win the key; followers try to
// create the key every TTL/6.
const (
	LeaderBucket = "hottopic_scaler"
	LeaderKey    = "leader"
)

// leaderBucket opens the election bucket, creating it when missing: on first
// start, and again whenever it was lost (a NATS restart without its store, a
// bucket deleted by hand). File storage, so a NATS restart does not lose it;
// replicated like the streams on a cluster.
func leaderBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration, so provision.StreamOptions) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, LeaderBucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LeaderBucket,
		Description: "Hot Topic scaler leader election",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    so.ReplicasFor(js.Conn()),
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.KeyValue(ctx, LeaderBucket)
	}
	return kv, err
}

func (s *Scaler) elect(ctx context.Context) {
	ttl := s.o.leaderTTL
	var (
		kv        jetstream.KeyValue
		rev       uint64
		lastRenew time.Time
		lastErr   string
		uncertain bool // a create failed without an answer: it may have been stored
	)
	fail := func(msg string, err error) {
		s.setElectionErr(msg + ": " + err.Error())
		if err.Error() != lastErr {
			lastErr = err.Error()
			s.log.Warn(msg, "error", err)
		}
	}
	ok := func() {
		lastErr = ""
		s.setElectionErr("")
	}
	for {
		wait := ttl / 6
		if s.leader.Load() && time.Since(lastRenew) >= ttl*2/3 {
			// Whatever failed (the bucket, the connection), a leader that could
			// not renew in time stops acting before anyone else can win the key.
			s.stepDown("leader key not renewed in time")
		}
		// Every election request is bounded: one stuck on a stream that has
		// no leader for the moment must neither delay the next attempt nor let
		// a leader act past the point where it must step down.
		octx, cancel := context.WithTimeout(ctx, ttl/4)
		switch {
		case kv == nil:
			var err error
			if kv, err = leaderBucket(octx, s.js, ttl, s.o.streams); err != nil {
				kv = nil
				fail("leader election: bucket unavailable", err)
				break
			}
			wait = 0
		case !s.leader.Load():
			r, err := kv.Create(octx, LeaderKey, []byte(s.o.instanceID))
			if errors.Is(err, jetstream.ErrKeyExists) && uncertain {
				// Our own earlier create, unanswered, may be what holds the key
				// (since a time we cannot know): free it rather than leave
				// everyone waiting for its TTL.
				if e, gerr := kv.Get(octx, LeaderKey); gerr == nil && string(e.Value()) == s.o.instanceID {
					_ = kv.Delete(octx, LeaderKey, jetstream.LastRevision(e.Revision()))
				}
			}
			uncertain = false
			switch {
			case err == nil:
				rev, lastRenew = r, time.Now()
				ok()
				s.becomeLeader(ctx)
				wait = ttl / 3
			case errors.Is(err, jetstream.ErrKeyExists):
				ok() // another scaler leads
			default:
				fail("leader election: cannot reach the leader key", err)
				uncertain = true
				kv = nil // look the bucket up again: it may be gone
			}
		default:
			r, err := kv.Update(octx, LeaderKey, []byte(s.o.instanceID), rev)
			switch {
			case err == nil:
				rev, lastRenew = r, time.Now()
				ok()
				wait = ttl / 3
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
				s.stepDown("another scaler holds the leader key")
			default:
				fail("leader election: renewal failed", err)
				kv = nil
				if time.Since(lastRenew) >= ttl*2/3 {
					s.stepDown("leader key not renewed in time")
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			if s.leader.Load() && kv != nil {
				// Hand over at once instead of making the others wait for the TTL.
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = kv.Delete(dctx, LeaderKey, jetstream.LastRevision(rev))
				cancel()
			}
			s.stepDown("shutting down")
			return
		case <-time.After(wait):
		}
	}
}

// setElectionErr records why this scaler cannot take part in the election
// ("" when it can), for /healthz.
func (s *Scaler) setElectionErr(e string) {
	s.mu.Lock()
	s.electionErr = e
	s.mu.Unlock()
}

func (s *Scaler) becomeLeader(ctx context.Context) {
	s.leader.Store(true)
	s.metrics.leaderChanges.Inc()
	s.log.Info("leading: this scaler reconciles and scales", "instance", s.o.instanceID)
	go func() {
		// Load the KV view in the background so that renewals are never late.
		for s.leader.Load() && ctx.Err() == nil {
			rec, err := s.prepareLeader(ctx)
			if err == nil {
				s.mu.Lock()
				if s.leader.Load() {
					s.rec = rec
				}
				s.prepareErr = ""
				s.mu.Unlock()
				s.requestDiscovery()
				return
			}
			s.mu.Lock()
			s.prepareErr = err.Error()
			s.mu.Unlock()
			s.log.Warn("leader: cannot load mappings yet; will retry", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()
}

func (s *Scaler) prepareLeader(ctx context.Context) (*reconciler, error) {
	if err := s.ensureAdvisoryStreams(ctx); err != nil {
		return nil, fmt.Errorf("dead-letter streams: %w", err)
	}
	return newReconciler(ctx, s.js, s.o.streams)
}

func (s *Scaler) stepDown(why string) {
	if !s.leader.Swap(false) {
		return
	}
	s.mu.Lock()
	s.rec = nil
	s.prepareErr = ""
	s.mu.Unlock()
	s.log.Info("no longer leading: "+why, "instance", s.o.instanceID)
}

// checkReconciler makes sure the mappings bucket the leader writes to still
// exists. When it was lost (deleted by hand, a NATS restart without its
// store), the bucket is created again and every mapping rewritten: the
// leader's view of what it holds starts from empty.
func (s *Scaler) checkReconciler(ctx context.Context, rec *reconciler) *reconciler {
	_, err := rec.kv.Status(ctx)
	if err == nil || !(errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)) {
		return rec // there, or unreachable for now: nothing to decide
	}
	s.log.Warn("mapping bucket lost; creating it again and rewriting every mapping", "bucket", mapping.Bucket)
	nrec, err := s.prepareLeader(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.prepareErr = err.Error()
		s.log.Warn("leader: cannot recreate the mapping bucket; will retry", "error", err)
		return nil
	}
	s.prepareErr = ""
	if !s.leader.Load() || s.rec != rec {
		return nil
	}
	s.rec = nrec
	return nrec
}
