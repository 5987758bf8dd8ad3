package scaler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

// reconciler is the leader's view of what JetStream holds: the mappings in the
// hottopic_mappings bucket, loaded once when leadership is won, then kept in
// step with every change the leader makes. The KV value is written after the
// streams and consumers it names exist, and before the consumers of removed
// topics are deleted, so a sidecar following its key never looks for a
// consumer that is not there yet.
type reconciler struct {
	kv      jetstream.KeyValue
	applied map[string]mapping.Mapping
	encoded map[string][]byte
	settled jetstream.Consumer // on provision.SettledStream (redrive.go); nil until made
}

// mappingsBucket opens the mappings bucket, creating it if missing.
func mappingsBucket(ctx context.Context, js jetstream.JetStream, so provision.StreamOptions) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, mapping.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open KV bucket %s: %w", mapping.Bucket, err)
	}
	cfg := jetstream.KeyValueConfig{
		Bucket:      mapping.Bucket,
		Description: "Hot Topic event mappings, one key per app GUID (written by the scaler, watched by sidecars)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    so.ReplicasFor(js.Conn()),
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.KeyValue(ctx, mapping.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create KV bucket %s: %w", mapping.Bucket, err)
	}
	return kv, nil
}

// newReconciler loads every mapping the bucket holds.
func newReconciler(ctx context.Context, js jetstream.JetStream, so provision.StreamOptions) (*reconciler, error) {
	kv, err := mappingsBucket(ctx, js, so)
	if err != nil {
		return nil, err
	}
	r := &reconciler{kv: kv, applied: map[string]mapping.Mapping{}, encoded: map[string][]byte{}}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read KV bucket %s: %w", mapping.Bucket, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read KV bucket %s: watcher closed", mapping.Bucket)
			}
			if e == nil { // all current values delivered
				return r, nil
			}
			m, err := mapping.Decode(e.Value())
			if err != nil {
				// Unreadable values are rewritten when the app is reconciled;
				// remember the topics we can still find so nothing leaks.
				m = mapping.Mapping{AppGUID: e.Key()}
			}
			r.applied[e.Key()] = m
			r.encoded[e.Key()] = e.Value()
		}
	}
}

// reconcile makes JetStream match the valid mappings: streams, consumers and
// KV keys for mapped apps; consumers and keys removed for apps no longer
// mapped. Invalid mappings are left exactly as they were.
func (s *Scaler) reconcile(ctx context.Context, r *reconciler) {
	valid, present, dirty := s.snapshotForReconcile()
	for guid, m := range valid {
		enc, err := m.Encode()
		if err != nil {
			continue
		}
		if bytes.Equal(enc, r.encoded[guid]) && !dirty[guid] {
			continue
		}
		err = s.apply(ctx, r, m, enc)
		s.setError(guid, "reconcile", err)
		if err != nil {
			s.metrics.reconcileErrors.Inc()
			s.log.Warn("reconcile failed; will retry", "app", m.AppName, "app_guid", guid, "error", err)
			continue
		}
		s.clearDirty(guid)
	}
	for guid, have := range r.applied {
		if present[guid] {
			continue // mapped (valid or not): handled above or left as it was
		}
		if err := s.unmap(ctx, r, guid, have); err != nil {
			s.metrics.reconcileErrors.Inc()
			s.log.Warn("unmapping failed; will retry", "app_guid", guid, "error", err)
		}
	}
	s.drainSettled(ctx, r)
}

func (s *Scaler) apply(ctx context.Context, r *reconciler, m mapping.Mapping, enc []byte) error {
	have := r.applied[m.AppGUID]
	for _, t := range m.Topics {
		if _, err := provision.EnsureMapping(ctx, s.js, m.AppGUID, m.AppName, t, m.Settings, s.o.streams); err != nil {
			return err
		}
	}
	if _, err := r.kv.Put(ctx, m.AppGUID, enc); err != nil {
		return fmt.Errorf("write KV %s/%s: %w", mapping.Bucket, m.AppGUID, err)
	}
	r.applied[m.AppGUID], r.encoded[m.AppGUID] = m, enc
	for _, t := range have.Topics {
		if slices.Contains(m.Topics, t) {
			continue
		}
		if err := s.deleteConsumer(ctx, m.AppGUID, t); err != nil {
			return err
		}
		// What was redriven or replayed to it on that topic goes too.
		if err := provision.RemoveRedrive(ctx, s.js, m.AppGUID, t); err != nil {
			return err
		}
		s.log.Info("unmapped topic", "app", m.AppName, "app_guid", m.AppGUID, "topic", t)
	}
	if len(have.Topics) == 0 {
		s.log.Info("mapped app", "app", m.AppName, "app_guid", m.AppGUID, "topics", m.Topics)
	} else if !slices.Equal(have.Topics, m.Topics) || have.Settings != m.Settings {
		s.log.Info("mapping updated", "app", m.AppName, "app_guid", m.AppGUID, "topics", m.Topics)
	}
	return nil
}

// unmap removes an app that is no longer mapped: its consumers first (on
// its topics, and its per-app consumer with what waits there for it), then
// its key, so that a failure half-way is retried from the key that remains.
// Its dead letters stay: they are the record of what failed.
func (s *Scaler) unmap(ctx context.Context, r *reconciler, guid string, have mapping.Mapping) error {
	for _, t := range have.Topics {
		if err := s.deleteConsumer(ctx, guid, t); err != nil {
			return err
		}
	}
	if err := provision.RemoveRedrive(ctx, s.js, guid, ""); err != nil {
		return err
	}
	if err := r.kv.Delete(ctx, guid); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete KV %s/%s: %w", mapping.Bucket, guid, err)
	}
	delete(r.applied, guid)
	delete(r.encoded, guid)
	s.log.Info("unmapped app", "app", have.AppName, "app_guid", guid, "topics", have.Topics)
	return nil
}

func (s *Scaler) deleteConsumer(ctx context.Context, guid, t string) error {
	err := s.js.DeleteConsumer(ctx, topic.StreamName(t), topic.ConsumerName(guid))
	if err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	return fmt.Errorf("delete consumer %s on stream %s: %w", topic.ConsumerName(guid), topic.StreamName(t), err)
}
