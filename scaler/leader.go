package scaler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

func leaderBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (jetstream.KeyValue, error) {
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
		Storage:     jetstream.MemoryStorage,
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
	)
	warn := func(msg string, err error) {
		if err.Error() != lastErr {
			lastErr = err.Error()
			s.log.Warn(msg, "error", err)
		}
	}
	for {
		wait := ttl / 6
		switch {
		case kv == nil:
			var err error
			if kv, err = leaderBucket(ctx, s.js, ttl); err != nil {
				kv = nil
				warn("leader election: bucket unavailable", err)
			}
		case !s.leader.Load():
			r, err := kv.Create(ctx, LeaderKey, []byte(s.o.instanceID))
			switch {
			case err == nil:
				rev, lastRenew, lastErr = r, time.Now(), ""
				s.becomeLeader(ctx)
				wait = ttl / 3
			case errors.Is(err, jetstream.ErrKeyExists):
				lastErr = ""
			default:
				warn("leader election: cannot reach the leader key", err)
			}
		default:
			r, err := kv.Update(ctx, LeaderKey, []byte(s.o.instanceID), rev)
			switch {
			case err == nil:
				rev, lastRenew, lastErr = r, time.Now(), ""
				wait = ttl / 3
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
				s.stepDown("another scaler holds the leader key")
			default:
				warn("leader election: renewal failed", err)
				if time.Since(lastRenew) >= ttl*2/3 {
					s.stepDown("leader key not renewed in time")
				}
			}
		}
		select {
		case <-ctx.Done():
			if s.leader.Load() && kv != nil {
				// Hand over at once instead of making the others wait for the TTL.
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = kv.Delete(dctx, LeaderKey, jetstream.LastRevision(rev))
				cancel()
				s.stepDown("shutting down")
			}
			return
		case <-time.After(wait):
		}
	}
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
				s.mu.Unlock()
				s.requestDiscovery()
				return
			}
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
	s.mu.Unlock()
	s.log.Info("no longer leading: "+why, "instance", s.o.instanceID)
}
