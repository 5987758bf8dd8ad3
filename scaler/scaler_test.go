package scaler_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/api"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

func TestScaler(t *testing.T) {
	spec.Run(t, "Scaler", testScaler, spec.Report(report.Terminal{}))
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testScaler(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect       = NewWithT(t).Expect
		Eventually   = NewWithT(t).Eventually
		Consistently = NewWithT(t).Consistently

		ns      *natstest.Server
		natsURL string
		js      jetstream.JetStream
		cc      *ccdouble.CC
		space   string
		logs    *logBuffer
	)

	const secret = "s3cret-never-logged"

	it.Before(func() {
		ns = natstest.Run(t)
		natsURL = ns.URL()
		var err error
		js, err = jetstream.New(ns.Connect())
		Expect(err).NotTo(HaveOccurred())
		cc = ccdouble.New(t)
		space = cc.AddSpace(cc.AddOrg("acme"), "prod")
		cc.AddClient("hottopic-scaler", secret, ccdouble.SpaceDeveloper(space))
		logs = &logBuffer{}
	})

	// addApp maps an app with the given annotations (topics included), at
	// the given instance count.
	addApp := func(name string, instances int, ann map[string]string) string {
		guid := cc.AddApp(space, name, map[string]string{mapping.LabelMapped: "true"}, ann)
		cc.SetInstances(guid, "web", instances)
		return guid
	}

	newPlatform := func() *cfplatform.Platform {
		p, err := cfplatform.New(cfplatform.Config{API: cc.URL(), ClientID: "hottopic-scaler", ClientSecret: secret, CacheTTL: 300 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		return p
	}

	// start runs a scaler with fast intervals on its own NATS connection;
	// the returned stop cancels it and waits for Run to return.
	start := func(id string, opts ...scaler.Option) (*scaler.Scaler, *nats.Conn, func()) {
		var sjs jetstream.JetStream
		nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
		Expect(err).NotTo(HaveOccurred())
		t.Cleanup(nc.Close)
		sjs, err = jetstream.New(nc)
		Expect(err).NotTo(HaveOccurred())
		all := append([]scaler.Option{
			scaler.WithPollInterval(50 * time.Millisecond),
			scaler.WithDiscoveryInterval(150 * time.Millisecond),
			scaler.WithLeaderTTL(time.Second),
			scaler.WithInstanceID(id),
			scaler.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
		}, opts...)
		s := scaler.New(sjs, newPlatform(), all...)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return s, nc, stop
	}

	scaleTo := func(guid string) []int {
		var out []int
		for _, c := range cc.ScaleCalls(guid) {
			if c.Status == http.StatusAccepted && c.Instances != nil {
				out = append(out, *c.Instances)
			}
		}
		return out
	}

	// publishMsg stores msg once. On a loaded machine an answer has come
	// past 5 s, and after a server restart one never came, so an attempt
	// without an answer is made again under the same Nats-Msg-Id (the stream
	// keeps one copy), for up to two minutes.
	publishMsg := func(msg *nats.Msg) {
		msg.Header.Set(jetstream.MsgIDHeader, rand.Text())
		deadline := time.Now().Add(2 * time.Minute)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := js.PublishMsg(ctx, msg)
			cancel()
			if err == nil || time.Now().After(deadline) || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders)) {
				Expect(err).NotTo(HaveOccurred())
				return
			}
		}
	}
	publish := func(subject string, n int) {
		for range n {
			msg := nats.NewMsg(subject)
			msg.Data = []byte("event")
			publishMsg(msg)
		}
	}

	statusOf := func(s *scaler.Scaler, guid string) api.Mapping {
		for _, m := range s.Status().Mappings {
			if m.AppGUID == guid {
				return m
			}
		}
		return api.Mapping{}
	}

	waitLeader := func(s *scaler.Scaler) { Eventually(s.Leader, 10*time.Second, 20*time.Millisecond).Should(BeTrue()) }

	consumerExists := func(t0, guid string) func() bool {
		return func() bool {
			_, err := js.Consumer(context.Background(), topic.StreamName(t0), topic.ConsumerName(guid))
			return err == nil
		}
	}

	when("an app is mapped, changed and unmapped", func() {
		it("keeps streams, one consumer per (app, topic) and the KV key in line with its metadata", func() {
			guid := addApp("thumbnailer", 0, map[string]string{
				mapping.AnnTopics: "images.uploaded, images.resized", mapping.AnnMaxDeliver: "7", mapping.AnnTimeout: "42",
			})
			s, _, _ := start("a")
			waitLeader(s)

			Eventually(consumerExists("images.uploaded", guid), 5*time.Second).Should(BeTrue())
			Eventually(consumerExists("images.resized", guid), 5*time.Second).Should(BeTrue())
			c, err := js.Consumer(context.Background(), topic.StreamName("images.uploaded"), guid)
			Expect(err).NotTo(HaveOccurred())
			cfg := c.CachedInfo().Config
			Expect(cfg.MaxDeliver).To(Equal(7))
			Expect(cfg.AckWait).To(Equal(42 * time.Second))
			Expect(cfg.FilterSubject).To(Equal("images.uploaded"))
			Expect(cfg.AckPolicy).To(Equal(jetstream.AckExplicitPolicy))
			// Operators looking at JetStream see which app a consumer serves.
			Expect(cfg.Metadata).To(HaveKeyWithValue(provision.MetaApp, guid))
			Expect(cfg.Metadata).To(HaveKeyWithValue(provision.MetaAppName, "thumbnailer"))

			kv, err := js.KeyValue(context.Background(), mapping.Bucket)
			Expect(err).NotTo(HaveOccurred())
			var m mapping.Mapping
			Eventually(func() error {
				e, err := kv.Get(context.Background(), guid)
				if err != nil {
					return err
				}
				m, err = mapping.Decode(e.Value())
				return err
			}, 5*time.Second).Should(Succeed())
			Expect(m.AppName).To(Equal("thumbnailer"))
			Expect(m.Topics).To(Equal([]string{"images.uploaded", "images.resized"}))
			Expect(m.MaxDeliver).To(Equal(7))
			Expect(m.TimeoutSeconds).To(Equal(42))

			// Unmap one topic: its consumer goes, its stream stays.
			cc.SetAnnotations(guid, map[string]string{mapping.AnnTopics: "images.uploaded", mapping.AnnMaxDeliver: "7", mapping.AnnTimeout: "42"})
			Eventually(consumerExists("images.resized", guid), 5*time.Second).Should(BeFalse())
			Expect(consumerExists("images.uploaded", guid)()).To(BeTrue())
			_, err = js.Stream(context.Background(), topic.StreamName("images.resized"))
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() []string {
				e, err := kv.Get(context.Background(), guid)
				if err != nil {
					return nil
				}
				m, _ := mapping.Decode(e.Value())
				return m.Topics
			}, 5*time.Second).Should(Equal([]string{"images.uploaded"}))

			// Unmap the app: key and consumers go, streams stay.
			cc.SetLabels(guid, nil)
			Eventually(func() error {
				_, err := kv.Get(context.Background(), guid)
				return err
			}, 5*time.Second).Should(MatchError(jetstream.ErrKeyNotFound))
			Expect(consumerExists("images.uploaded", guid)()).To(BeFalse())
			_, err = js.Stream(context.Background(), topic.StreamName("images.uploaded"))
			Expect(err).NotTo(HaveOccurred())
			Expect(logs.String()).NotTo(ContainSubstring(secret))
		})
	})

	when("events arrive", func() {
		it("activates an idle app on the first event and scales up in proportion, within bounds", func() {
			guid := addApp("thumbnailer", 0, map[string]string{mapping.AnnTopics: "images.uploaded", mapping.AnnMax: "4"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(consumerExists("images.uploaded", guid), 5*time.Second).Should(BeTrue())
			Consistently(func() []int { return scaleTo(guid) }, 300*time.Millisecond).Should(BeEmpty(), "no lag, nothing to do")

			publish("images.uploaded", 1)
			Eventually(func() []int { return scaleTo(guid) }, 5*time.Second).Should(Equal([]int{1}))
			Expect(cc.Instances(guid, "web")).To(Equal(1))
			Eventually(logs.String, 2*time.Second).Should(ContainSubstring("scaled thumbnailer 0 → 1: lag 1, 10 per instance"))

			// The scaler may look while events are still arriving: it then
			// goes up in more than one step, never down.
			publish("images.uploaded", 26)
			Eventually(func() int { return cc.Instances(guid, "web") }, 5*time.Second).Should(Equal(3))
			Eventually(logs.String, 2*time.Second).Should(MatchRegexp(`scaled thumbnailer [12] → 3: lag 2[1-7], 10 per instance`))

			publish("images.uploaded", 100)
			Eventually(func() int { return cc.Instances(guid, "web") }, 5*time.Second).Should(Equal(4))
			Eventually(logs.String, 2*time.Second).Should(MatchRegexp(`scaled thumbnailer 3 → 4: lag \d+, 10 per instance, capped at max-instances 4`))
			Expect(scaleTo(guid)).To(BeElementOf([]int{1, 3, 4}, []int{1, 2, 3, 4}))
			Consistently(func() []int { return scaleTo(guid) }, 300*time.Millisecond).Should(HaveLen(len(scaleTo(guid))), "capped: no further calls")

			Eventually(func() int64 { return statusOf(s, guid).Lag }, 2*time.Second).Should(BeEquivalentTo(127))
			st := statusOf(s, guid)
			Expect(st.LagKnown).To(BeTrue())
			Expect(st.CurrentInstances).To(HaveValue(Equal(4)))
			Expect(st.DesiredInstances).To(HaveValue(Equal(4)))
			Expect(st.LastScaleReason).To(MatchRegexp(`^lag \d+, 10 per instance, capped at max-instances 4$`))
			Expect(st.LastScaleTime).NotTo(BeZero())
		})

		it("keeps an app at min-instances with no events", func() {
			guid := addApp("ticker", 0, map[string]string{mapping.AnnTopics: "ticks", mapping.AnnMin: "2"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(func() []int { return scaleTo(guid) }, 5*time.Second).Should(Equal([]int{2}))
			Eventually(logs.String, 2*time.Second).Should(ContainSubstring("scaled ticker 0 → 2: min-instances 2"))
		})

		it("scales down after idle-seconds and to zero once the lag stayed 0", func() {
			guid := addApp("resizer", 0, map[string]string{mapping.AnnTopics: "jobs", mapping.AnnIdleSeconds: "1"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(consumerExists("jobs", guid), 5*time.Second).Should(BeTrue())
			publish("jobs", 27)
			Eventually(func() int { return cc.Instances(guid, "web") }, 5*time.Second).Should(Equal(3))
			ups := len(scaleTo(guid))

			// The app works through all but 4 events: 3 → 1 after idle-seconds.
			c, err := js.Consumer(context.Background(), topic.StreamName("jobs"), guid)
			Expect(err).NotTo(HaveOccurred())
			ack := func(n int) {
				batch, err := c.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
				Expect(err).NotTo(HaveOccurred())
				got := 0
				for m := range batch.Messages() {
					Expect(m.DoubleAck(context.Background())).To(Succeed())
					got++
				}
				Expect(got).To(Equal(n))
			}
			ack(23)
			Eventually(func() []int { return scaleTo(guid)[ups:] }, 5*time.Second).Should(Equal([]int{1}))
			Eventually(logs.String, 2*time.Second).Should(ContainSubstring("scaled resizer 3 → 1: lag 4, 10 per instance, after 1s idle"))
			ack(4)
			Eventually(func() []int { return scaleTo(guid)[ups:] }, 5*time.Second).Should(Equal([]int{1, 0}))
			Eventually(logs.String, 2*time.Second).Should(ContainSubstring("scaled resizer 1 → 0: no lag for 1s"))
			Eventually(logs.String, 2*time.Second).Should(MatchRegexp(`msg="scaled resizer 1 → 0: no lag for 1s" app=resizer app_guid=` + guid + ` from=1 to=0 lag=0`))
		})
	})

	when("Cloud Controller fails", func() {
		it("changes nothing while CC answers 500 or is down, and scales once it is back", func() {
			guid := addApp("thumbnailer", 0, map[string]string{mapping.AnnTopics: "images.uploaded"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(consumerExists("images.uploaded", guid), 5*time.Second).Should(BeTrue())

			cc.FailNext(ccdouble.Fault{Status: http.StatusInternalServerError, Times: -1})
			publish("images.uploaded", 15)
			Eventually(func() []string { return statusOf(s, guid).Errors }, 5*time.Second).ShouldNot(BeEmpty())
			Consistently(func() int { return cc.Instances(guid, "web") }, 500*time.Millisecond).Should(Equal(0))

			cc.ClearFaults()
			Eventually(func() []int { return scaleTo(guid) }, 10*time.Second).Should(Equal([]int{2}))

			cc.Down()
			publish("images.uploaded", 20)
			Consistently(func() []int { return scaleTo(guid) }, 500*time.Millisecond).Should(Equal([]int{2}))
			cc.Up()
			Eventually(func() []int { return scaleTo(guid) }, 10*time.Second).Should(Equal([]int{2, 4}))
			Eventually(func() []string { return statusOf(s, guid).Errors }, 5*time.Second).Should(BeEmpty())
			Expect(logs.String()).NotTo(ContainSubstring(secret))
		})

		it("fetches a new token when the old one expires", func() {
			guid := addApp("thumbnailer", 0, map[string]string{mapping.AnnTopics: "images.uploaded"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(consumerExists("images.uploaded", guid), 5*time.Second).Should(BeTrue())
			issued := cc.TokensIssued()
			Expect(issued).To(BeNumerically(">=", 1))

			cc.ExpireTokens()
			publish("images.uploaded", 1)
			Eventually(func() []int { return scaleTo(guid) }, 10*time.Second).Should(Equal([]int{1}))
			Expect(cc.TokensIssued()).To(BeNumerically(">", issued))
		})
	})

	when("NATS is down", func() {
		it("leaves apps as they are and carries on when NATS is back", func() {
			guid := addApp("resizer", 2, map[string]string{mapping.AnnTopics: "jobs", mapping.AnnIdleSeconds: "1"})
			// Streams and consumers exist; the scaler then starts with NATS gone.
			s, _, stop := start("a")
			waitLeader(s)
			Eventually(consumerExists("jobs", guid), 5*time.Second).Should(BeTrue())
			stop()
			cc.ResetCalls()
			cc.SetInstances(guid, "web", 2)

			ns.Shutdown()
			s2, _, _ := start("b")
			Eventually(func() bool { return statusOf(s2, guid).AppGUID == guid }, 5*time.Second).Should(BeTrue())
			Consistently(func() []int { return scaleTo(guid) }, 2*time.Second).Should(BeEmpty(),
				"an idle app is not scaled down while its lag cannot be read")
			Expect(statusOf(s2, guid).LagKnown).To(BeFalse())

			ns.Restart()
			Eventually(func() []int { return scaleTo(guid) }, 15*time.Second).Should(Equal([]int{0}))
		})
	})

	when("NATS restarts or loses what the scaler made", func() {
		oneLeader := func(ss ...*scaler.Scaler) func() int {
			return func() int {
				n := 0
				for _, s := range ss {
					if s.Leader() {
						n++
					}
				}
				return n
			}
		}
		leaderKey := func() (string, error) {
			kv, err := js.KeyValue(context.Background(), scaler.LeaderBucket)
			if err != nil {
				return "", err
			}
			e, err := kv.Get(context.Background(), scaler.LeaderKey)
			if err != nil {
				return "", err
			}
			return string(e.Value()), nil
		}

		it("leads again after a restart, and events queued for an app at zero wake it", func() {
			guid := addApp("resizer", 0, map[string]string{mapping.AnnTopics: "jobs"})
			a, _, _ := start("a")
			b, _, _ := start("b")
			Eventually(oneLeader(a, b), 10*time.Second, 20*time.Millisecond).Should(Equal(1))
			Eventually(consumerExists("jobs", guid), 5*time.Second).Should(BeTrue())

			ns.Restart()
			Eventually(leaderKey, 10*time.Second, 50*time.Millisecond).Should(BeElementOf("a", "b"),
				"the election bucket is there after the restart, and held")
			Eventually(oneLeader(a, b), 10*time.Second, 20*time.Millisecond).Should(Equal(1))
			Consistently(oneLeader(a, b), 2*time.Second, 20*time.Millisecond).Should(Equal(1), "leadership is kept, not lost again")
			for _, s := range []*scaler.Scaler{a, b} {
				Eventually(func() string { return s.Health().Status }, 5*time.Second).Should(Equal("ok"))
			}
			publish("jobs", 3)
			Eventually(func() []int { return scaleTo(guid) }, 5*time.Second).Should(Equal([]int{1}))
		})

		it("says on /healthz that it cannot lead, and leads once the bucket can be made", func() {
			guid := addApp("resizer", 0, map[string]string{mapping.AnnTopics: "jobs"})
			// Something else holds the election bucket's subjects: the bucket cannot be created.
			blocker, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "BLOCKER", Subjects: []string{"$KV." + scaler.LeaderBucket + ".>"}})
			Expect(err).NotTo(HaveOccurred())
			s, _, _ := start("a")
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			Eventually(func() string { return s.Health().LeaderError }, 5*time.Second).Should(ContainSubstring("leader election: bucket unavailable"))
			resp, err := http.Get(srv.URL + "/healthz")
			Expect(err).NotTo(HaveOccurred())
			var h map[string]any
			Expect(json.NewDecoder(resp.Body).Decode(&h)).To(Succeed())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(http.StatusOK))
			Expect(h["status"]).To(Equal("degraded"))
			Expect(h["leader"]).To(BeFalse())
			Expect(fmt.Sprint(h["problems"])).To(ContainSubstring("cannot take part in leader election"))
			Expect(s.Leader()).To(BeFalse())
			// Behind the Access layer anyone may ask, and learns what is wrong but no error text.
			open := httptest.NewServer(scaler.Access{}.Protect(s.Handler()))
			defer open.Close()
			resp, err = http.Get(open.URL + "/healthz")
			Expect(err).NotTo(HaveOccurred())
			h = map[string]any{}
			Expect(json.NewDecoder(resp.Body).Decode(&h)).To(Succeed())
			resp.Body.Close()
			Expect(h["status"]).To(Equal("degraded"))
			Expect(h["problems"]).To(ContainElement("cannot take part in leader election"))
			Expect(h["problems"]).NotTo(ContainElement(ContainSubstring("(")), "no error text")
			Expect(h).NotTo(HaveKey("leader_error"))

			Expect(js.DeleteStream(context.Background(), blocker.CachedInfo().Config.Name)).To(Succeed())
			waitLeader(s)
			Eventually(func() string { return s.Health().Status }, 5*time.Second).Should(Equal("ok"))
			Eventually(consumerExists("jobs", guid), 5*time.Second).Should(BeTrue())
		})

		it("makes again every stream, consumer and bucket deleted by hand", func() {
			guid := addApp("resizer", 0, map[string]string{mapping.AnnTopics: "jobs"})
			a, _, _ := start("a")
			b, _, _ := start("b")
			Eventually(oneLeader(a, b), 10*time.Second, 20*time.Millisecond).Should(Equal(1))
			Eventually(consumerExists("jobs", guid), 5*time.Second).Should(BeTrue())
			Eventually(func() error {
				_, err := js.Consumer(context.Background(), provision.AdvisoryStream, provision.AdvisoryConsumer)
				return err
			}, 5*time.Second).Should(Succeed())

			ctx := context.Background()
			Expect(js.DeleteKeyValue(ctx, scaler.LeaderBucket)).To(Succeed())
			Expect(js.DeleteKeyValue(ctx, mapping.Bucket)).To(Succeed())
			Expect(js.DeleteStream(ctx, topic.StreamName("jobs"))).To(Succeed())
			Expect(js.DeleteStream(ctx, provision.AdvisoryStream)).To(Succeed())
			Expect(js.DeleteStream(ctx, topic.DLQStream)).To(Succeed())

			Eventually(leaderKey, 10*time.Second, 50*time.Millisecond).Should(BeElementOf("a", "b"))
			Eventually(oneLeader(a, b), 10*time.Second, 20*time.Millisecond).Should(Equal(1))
			Eventually(consumerExists("jobs", guid), 10*time.Second).Should(BeTrue())
			Eventually(func() error {
				kv, err := js.KeyValue(ctx, mapping.Bucket)
				if err != nil {
					return err
				}
				_, err = kv.Get(ctx, guid)
				return err
			}, 10*time.Second).Should(Succeed(), "the app's mapping key is written again")
			Eventually(func() error {
				_, err := js.Consumer(ctx, provision.AdvisoryStream, provision.AdvisoryConsumer)
				return err
			}, 10*time.Second).Should(Succeed())
			Eventually(func() error { _, err := js.Stream(ctx, topic.DLQStream); return err }, 10*time.Second).Should(Succeed())

			publish("jobs", 2)
			Eventually(func() []int { return scaleTo(guid) }, 5*time.Second).Should(Equal([]int{1}))
		})
	})

	when("one mapping is invalid", func() {
		it("reports it with the reason and handles the others", func() {
			bad := addApp("broken", 0, map[string]string{mapping.AnnTopics: "orders", mapping.AnnMin: "5", mapping.AnnMax: "2"})
			nan := addApp("typo", 0, map[string]string{mapping.AnnTopics: "orders", mapping.AnnLagPer: "ten"})
			wild := addApp("wild", 0, map[string]string{mapping.AnnTopics: "orders.*"})
			good := addApp("orders", 0, map[string]string{mapping.AnnTopics: "orders"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(consumerExists("orders", good), 5*time.Second).Should(BeTrue())
			publish("orders", 1)
			Eventually(func() []int { return scaleTo(good) }, 5*time.Second).Should(Equal([]int{1}))

			Expect(statusOf(s, bad).Valid).To(BeFalse())
			Expect(statusOf(s, bad).Error).To(ContainSubstring("min-instances (5) must not exceed max-instances (2)"))
			Expect(statusOf(s, nan).Error).To(ContainSubstring("annotation hottopic.io/lag-per-instance must be a whole number"))
			Expect(statusOf(s, wild).Error).To(ContainSubstring("wildcards"))
			for _, g := range []string{bad, nan, wild} {
				Expect(consumerExists("orders", g)()).To(BeFalse())
				Expect(scaleTo(g)).To(BeEmpty())
			}
			kv, err := js.KeyValue(context.Background(), mapping.Bucket)
			Expect(err).NotTo(HaveOccurred())
			_, err = kv.Get(context.Background(), bad)
			Expect(err).To(MatchError(jetstream.ErrKeyNotFound))
		})

		it("warns about an unknown hottopic.io/* annotation in the mapping's errors and the log", func() {
			guid := addApp("resizer", 0, map[string]string{mapping.AnnTopics: "jobs", "hottopic.io/max-instance": "3"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(consumerExists("jobs", guid), 5*time.Second).Should(BeTrue())
			st := statusOf(s, guid)
			Expect(st.Valid).To(BeTrue(), "a warning, not an invalid mapping")
			Expect(st.Errors).To(ContainElement("annotations: unknown annotation hottopic.io/max-instance is ignored (did you mean hottopic.io/max-instances?)"))
			Expect(st.Settings.MaxInstances).To(Equal(10))
			Expect(logs.String()).To(ContainSubstring("hottopic.io/max-instance is ignored"))

			cc.SetAnnotations(guid, map[string]string{mapping.AnnTopics: "jobs", mapping.AnnMax: "3"})
			Eventually(func() []string { return statusOf(s, guid).Errors }, 5*time.Second).Should(BeEmpty())
		})

		it("keeps a mapping that turns invalid working as it was, activation included", func() {
			guid := addApp("resizer", 0, map[string]string{mapping.AnnTopics: "jobs", mapping.AnnMax: "3", mapping.AnnIdleSeconds: "1"})
			s, _, stop := start("a")
			waitLeader(s)
			Eventually(consumerExists("jobs", guid), 5*time.Second).Should(BeTrue())
			// The key is written after the consumer: await it too.
			var kv jetstream.KeyValue
			var before jetstream.KeyValueEntry
			Eventually(func() error {
				var err error
				if kv, err = js.KeyValue(context.Background(), mapping.Bucket); err != nil {
					return err
				}
				before, err = kv.Get(context.Background(), guid)
				return err
			}, 5*time.Second).Should(Succeed())

			// A typo in one annotation (and a new topic beside it).
			cc.SetAnnotations(guid, map[string]string{mapping.AnnTopics: "jobs,jobs.urgent", mapping.AnnMax: "3", mapping.AnnIdleSeconds: "1", mapping.AnnMin: "one"})
			Eventually(func() bool { return statusOf(s, guid).Valid }, 5*time.Second).Should(BeFalse())
			st := statusOf(s, guid)
			Expect(st.Error).To(ContainSubstring("annotation hottopic.io/min-instances must be a whole number"))
			Expect(st.Topics).To(Equal([]string{"jobs"}), "the mapping in effect")
			Expect(st.Settings.MaxInstances).To(Equal(3))

			// Events on the mapped topic still wake the app, within the old bounds.
			publish("jobs", 45)
			Eventually(func() int { return cc.Instances(guid, "web") }, 5*time.Second).Should(Equal(3))
			Expect(scaleTo(guid)).To(BeElementOf([]int{3}, []int{1, 3}, []int{1, 2, 3}, []int{2, 3}))
			Eventually(func() int64 { return statusOf(s, guid).Lag }, 2*time.Second).Should(BeEquivalentTo(45))
			Expect(statusOf(s, guid).LagKnown).To(BeTrue())

			// Nothing in JetStream was touched.
			after, err := kv.Get(context.Background(), guid)
			Expect(err).NotTo(HaveOccurred())
			Expect(after.Revision()).To(Equal(before.Revision()))
			_, err = js.Stream(context.Background(), topic.StreamName("jobs.urgent"))
			Expect(err).To(MatchError(jetstream.ErrStreamNotFound))

			// A new leader finds the mapping in effect in the KV and keeps it working.
			stop()
			s2, _, _ := start("b")
			waitLeader(s2)
			Eventually(func() []string { return statusOf(s2, guid).Topics }, 5*time.Second).Should(Equal([]string{"jobs"}))
			Expect(statusOf(s2, guid).Valid).To(BeFalse())
			Eventually(func() int64 { return statusOf(s2, guid).Lag }, 5*time.Second).Should(BeEquivalentTo(45))
		})
	})

	when("two scalers run", func() {
		it("lets exactly one scale, and the other takes over when the leader dies", func() {
			guid := addApp("thumbnailer", 0, map[string]string{mapping.AnnTopics: "images.uploaded"})
			a, anc, astop := start("a")
			b, bnc, bstop := start("b")
			Eventually(func() int {
				n := 0
				for _, s := range []*scaler.Scaler{a, b} {
					if s.Leader() {
						n++
					}
				}
				return n
			}, 10*time.Second, 20*time.Millisecond).Should(Equal(1))
			Consistently(func() bool { return a.Leader() != b.Leader() }, 1500*time.Millisecond, 20*time.Millisecond).Should(BeTrue())

			leader, lnc, lstop, follower := a, anc, astop, b
			if b.Leader() {
				leader, lnc, lstop, follower = b, bnc, bstop, a
			}
			_ = leader
			Eventually(consumerExists("images.uploaded", guid), 5*time.Second).Should(BeTrue())
			publish("images.uploaded", 1)
			Eventually(func() []int { return scaleTo(guid) }, 5*time.Second).Should(Equal([]int{1}))
			Consistently(func() []int { return scaleTo(guid) }, 300*time.Millisecond).Should(Equal([]int{1}), "one scale call, not one per scaler")
			Expect(follower.Status().Leader).To(BeFalse())
			Expect(statusOf(follower, guid).Lag).To(BeEquivalentTo(1), "followers observe too")

			// Kill the leader without a goodbye: its key must expire.
			lnc.Close()
			lstop()
			Eventually(follower.Leader, 10*time.Second, 20*time.Millisecond).Should(BeTrue())
			publish("images.uploaded", 20)
			Eventually(func() int { return cc.Instances(guid, "web") }, 5*time.Second).Should(Equal(3))
		})
	})

	when("an event's deliveries run out with no sidecar alive", func() {
		it("dead-letters it from the max-deliveries advisory with the sidecar's headers", func() {
			guid := addApp("crasher", 1, map[string]string{mapping.AnnTopics: "payments", mapping.AnnMaxDeliver: "2", mapping.AnnTimeout: "1"})
			s, _, _ := start("a")
			waitLeader(s)
			Eventually(consumerExists("payments", guid), 5*time.Second).Should(BeTrue())
			_, err := js.Stream(context.Background(), topic.DLQStream)
			Eventually(func() error { _, err = js.Stream(context.Background(), "HOTTOPIC_ADVISORIES"); return err }, 5*time.Second).Should(Succeed())

			msg := nats.NewMsg("payments")
			msg.Data = []byte(`{"amount":42}`)
			msg.Header.Set("Content-Type", "application/json")
			msg.Header.Set("ce-type", "payment.made")
			publishMsg(msg)

			// A sidecar that takes the event and dies, twice; the next pull
			// makes the server give up on it.
			c, err := js.Consumer(context.Background(), topic.StreamName("payments"), guid)
			Expect(err).NotTo(HaveOccurred())
			for range 2 {
				batch, err := c.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
				Expect(err).NotTo(HaveOccurred())
				n := 0
				for range batch.Messages() {
					n++
				}
				Expect(n).To(Equal(1))
			}
			batch, err := c.Fetch(1, jetstream.FetchMaxWait(2500*time.Millisecond))
			Expect(err).NotTo(HaveOccurred())
			for range batch.Messages() {
				t.Fatal("delivered beyond max-deliver")
			}

			dlq, err := js.Stream(context.Background(), topic.DLQStream)
			Expect(err).NotTo(HaveOccurred())
			var letter *jetstream.RawStreamMsg
			Eventually(func() error {
				letter, err = dlq.GetLastMsgForSubject(context.Background(), topic.DLQSubject("payments"))
				return err
			}, 10*time.Second).Should(Succeed())
			Expect(letter.Data).To(Equal([]byte(`{"amount":42}`)))
			Expect(letter.Header.Get("Content-Type")).To(Equal("application/json"))
			Expect(letter.Header.Get("ce-type")).To(Equal("payment.made"))
			Expect(letter.Header.Get(provision.HeaderApp)).To(Equal(guid))
			Expect(letter.Header.Get(provision.HeaderDeliveries)).To(Equal("2"))
			Expect(letter.Header.Get(provision.HeaderStreamSequence)).To(Equal("1"))
			Expect(letter.Header.Get(provision.HeaderReason)).To(ContainSubstring("max deliveries (2)"))

			adv, err := js.Stream(context.Background(), "HOTTOPIC_ADVISORIES")
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() uint64 {
				info, err := adv.Info(context.Background())
				if err != nil {
					return 99
				}
				return info.State.Msgs
			}, 5*time.Second).Should(BeZero(), "the advisory is consumed once handled")
		})
	})

	when("serving HTTP", func() {
		it("answers /v1/mappings, /healthz and /metrics", func() {
			guid := addApp("thumbnailer", 0, map[string]string{mapping.AnnTopics: "images.uploaded"})
			s, _, _ := start("a")
			waitLeader(s)
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			Eventually(func() bool { return statusOf(s, guid).LagKnown }, 5*time.Second).Should(BeTrue())

			resp, err := http.Get(srv.URL + api.Path)
			Expect(err).NotTo(HaveOccurred())
			var body api.Mappings
			Expect(json.NewDecoder(resp.Body).Decode(&body)).To(Succeed())
			resp.Body.Close()
			Expect(body.Leader).To(BeTrue())
			Expect(body.Instance).To(Equal("a"))
			Expect(body.Mappings).To(HaveLen(1))
			Expect(body.Mappings[0].AppName).To(Equal("thumbnailer"))
			Expect(body.Mappings[0].Topics).To(Equal([]string{"images.uploaded"}))
			Expect(body.Mappings[0].Streams).To(HaveKeyWithValue("images.uploaded", topic.StreamName("images.uploaded")))
			Expect(body.Mappings[0].Settings).To(Equal(mapping.Defaults()))
			Expect(body.Mappings[0].Valid).To(BeTrue())

			// Every field docs/design.md names is there even before any scale or error,
			// so clients can rely on the keys.
			resp, err = http.Get(srv.URL + api.Path)
			Expect(err).NotTo(HaveOccurred())
			var raw struct{ Mappings []map[string]any }
			Expect(json.NewDecoder(resp.Body).Decode(&raw)).To(Succeed())
			resp.Body.Close()
			Expect(raw.Mappings).To(HaveLen(1))
			for _, k := range []string{"app", "app_guid", "app_name", "topics", "settings", "lag", "current_instances", "desired_instances", "last_scale_time", "last_scale_reason", "errors"} {
				Expect(raw.Mappings[0]).To(HaveKey(k))
			}
			Expect(raw.Mappings[0]["app"]).To(Equal("thumbnailer"))
			Expect(raw.Mappings[0]["last_scale_time"]).To(BeNil())
			Expect(raw.Mappings[0]["errors"]).To(BeEmpty())

			resp, err = http.Get(srv.URL + "/healthz")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(http.StatusOK))
			resp.Body.Close()

			resp, err = http.Get(srv.URL + "/metrics")
			Expect(err).NotTo(HaveOccurred())
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			Expect(string(b)).To(ContainSubstring("hottopic_scaler_leader 1"))
			Expect(string(b)).To(ContainSubstring(`hottopic_scaler_app_lag{app="thumbnailer",app_guid="` + guid + `"} 0`))
			Expect(strings.Count(string(b), "hottopic_scaler_poll_nats_requests_count")).To(Equal(1))
			// No scale call yet, and the series are there at zero for rate() and alerts.
			Expect(string(b)).To(ContainSubstring(`hottopic_scaler_scale_total{direction="up"} 0`))
			Expect(string(b)).To(ContainSubstring(`hottopic_scaler_scale_total{direction="down"} 0`))
		})
	})
}

func TestOwnerAccessListensOnLoopbackOnly(t *testing.T) {
	_, err := scaler.Listen("0.0.0.0:0", nil, scaler.OwnerAccess())
	if err == nil || !strings.Contains(err.Error(), "without authentication it listens on a loopback address only") {
		t.Fatalf("Listen on 0.0.0.0 without authentication: got %v", err)
	}
	svc, err := scaler.Listen("127.0.0.1:0", nil, scaler.OwnerAccess())
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()
}
