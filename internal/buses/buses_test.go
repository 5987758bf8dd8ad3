package buses_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/buses"
	"github.com/hottopic-io/hottopic/internal/natstest"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestSealBindsTheValueToItsPlace(t *testing.T) {
	g := NewWithT(t)
	s, err := buses.NewSealer(key)
	g.Expect(err).NotTo(HaveOccurred())
	sealed := s.Seal("secret", buses.SealedAt("a", buses.FieldScalerCreds))
	g.Expect(s.Open(sealed, buses.SealedAt("a", buses.FieldScalerCreds))).To(Equal("secret"))
	_, err = s.Open(sealed, buses.SealedAt("b", buses.FieldScalerCreds))
	g.Expect(err).To(MatchError("sealed value does not open with HOTTOPIC_STATE_KEY"))
	other, _ := buses.NewSealer([]byte("fedcba9876543210fedcba9876543210"))
	_, err = other.Open(sealed, buses.SealedAt("a", buses.FieldScalerCreds))
	g.Expect(err).To(HaveOccurred())
}

func TestAccessFromEnv(t *testing.T) {
	g := NewWithT(t)
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	_, ok, err := buses.AccessFromEnv(get)
	g.Expect(ok, err).To(BeFalse(), "no broker: one bus")
	env[buses.EnvStateKey] = "c2hvcnQ="
	_, _, err = buses.AccessFromEnv(get)
	g.Expect(err).To(MatchError(ContainSubstring("HOTTOPIC_INTERNAL_ACCOUNT_KEY is not set")))
}

// Follow hands over the whole state at first and after each change.
func TestFollow(t *testing.T) {
	g := NewWithT(t)
	srv := natstest.Run(t)
	nc, err := nats.Connect(srv.URL())
	g.Expect(err).NotTo(HaveOccurred())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err = buses.OpenState(ctx, js, key)
	g.Expect(err).To(MatchError(jetstream.ErrBucketNotFound), "before the broker made the buckets")
	kvs := map[string]jetstream.KeyValue{}
	for _, b := range []string{buses.BusesBucket, buses.BindingsBucket} {
		kvs[b], err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b})
		g.Expect(err).NotTo(HaveOccurred())
	}
	put := func(bucket, k string, v any) {
		raw, _ := json.Marshal(v)
		_, err := kvs[bucket].Put(ctx, k, raw)
		g.Expect(err).NotTo(HaveOccurred())
	}
	put(buses.BusesBucket, "one", buses.Bus{ID: "one"})
	st, err := buses.OpenState(ctx, js, key)
	g.Expect(err).NotTo(HaveOccurred())

	snaps := make(chan buses.Snapshot, 100)
	done := make(chan error, 1)
	fctx, stop := context.WithCancel(ctx)
	go func() { done <- st.Follow(fctx, func(s buses.Snapshot) { snaps <- s }) }()
	next := func() buses.Snapshot {
		select {
		case s := <-snaps:
			return s
		case <-ctx.Done():
			t.Fatal("no snapshot")
			return buses.Snapshot{}
		}
	}
	s := next()
	g.Expect(s.Buses).To(HaveKey("one"))
	g.Expect(s.Bindings).To(BeEmpty())

	put(buses.BindingsBucket, buses.BindingKey("one", "b1"), buses.Binding{ID: "b1", BusID: "one", AppGUID: "app"})
	for s = next(); len(s.Bindings) == 0; s = next() {
	}
	g.Expect(s.Bindings[buses.BindingKey("one", "b1")].AppGUID).To(Equal("app"))

	_, err = kvs[buses.BusesBucket].Put(ctx, "two", []byte("not json"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(kvs[buses.BindingsBucket].Purge(ctx, buses.BindingKey("one", "b1"))).To(Succeed())
	for s = next(); len(s.Bindings) != 0 || len(s.Errors) == 0; s = next() {
	}
	g.Expect(s.Errors).To(ConsistOf(ContainSubstring("hottopic_buses/two: bus two: unreadable record")))
	g.Expect(s.Buses).To(HaveLen(1))

	stop()
	g.Expect(<-done).To(Succeed())
}
