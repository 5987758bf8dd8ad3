package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/internal/provision"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

func freePort(t *testing.T) int { return proctest.FreePort(t) }

// delivery is one request the test app received.
type delivery struct {
	Header http.Header
	Body   string
}

// testApp is the function app: an HTTP server on 127.0.0.1 recording every event.
type testApp struct {
	port int
	srv  *http.Server

	mu      sync.Mutex
	got     []delivery
	handler func(d delivery, w http.ResponseWriter)
}

func newApp(t *testing.T, port int, handler func(d delivery, w http.ResponseWriter)) *testApp {
	t.Helper()
	if port == 0 {
		port = freePort(t)
	}
	a := &testApp{port: port, handler: handler}
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d := delivery{Header: r.Header.Clone(), Body: string(body)}
		d.Header.Set("X-Path", r.URL.Path)
		a.mu.Lock()
		a.got = append(a.got, d)
		h := a.handler
		a.mu.Unlock()
		if h != nil {
			h(d, w)
			return
		}
		w.WriteHeader(http.StatusOK)
	})}
	return a
}

func (a *testApp) start(t *testing.T) *testApp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(a.port))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.srv.Serve(l) }()
	t.Cleanup(func() { _ = a.srv.Close() })
	return a
}

func (a *testApp) deliveries() []delivery {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]delivery(nil), a.got...)
}

// bodies counts deliveries per body.
func (a *testApp) bodies() map[string]int {
	out := map[string]int{}
	for _, d := range a.deliveries() {
		out[d.Body]++
	}
	return out
}

// startSidecar runs the built hottopic-sidecar with only env (and PATH, HOME).
func startSidecar(t *testing.T, env map[string]string) *proctest.Proc {
	t.Helper()
	cmd := exec.Command(proctest.Build(t, "./cmd/hottopic-sidecar"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return proctest.Start(t, cmd)
}

// env is the CF-shaped environment of one instance.
func env(appGUID string, appPort int, natsURL string, extra ...string) map[string]string {
	e := map[string]string{
		"PORT":                          strconv.Itoa(appPort),
		"VCAP_APPLICATION":              fmt.Sprintf(`{"application_id":%q,"application_name":"fn","instance_index":0}`, appGUID),
		"HOTTOPIC_NATS_URL":             natsURL,
		"HOTTOPIC_LISTEN":               "127.0.0.1:0",
		"HOTTOPIC_NATS_CONNECT_TIMEOUT": "3s",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		e[extra[i]] = extra[i+1]
	}
	return e
}

func jsFor(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func publishN(t *testing.T, js jetstream.JetStream, subject string, n int, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if _, err := js.Publish(ctx, subject, []byte(prefix+strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func consumerInfo(t *testing.T, js jetstream.JetStream, stream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func jsonMap(b []byte) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

func natsUser(user, password string) nats.Option { return nats.UserInfo(user, password) }

// mapApps maps each app to topic t as the scaler would: the topic's stream,
// the app's consumer, then its key in the mapping bucket.
func mapApps(t *testing.T, js jetstream.JetStream, tp string, settings mapping.Settings, guids ...string) {
	t.Helper()
	ctx := context.Background()
	kv := putMapping(t, js, "", "")
	for _, g := range guids {
		if _, err := provision.EnsureTopicStream(ctx, js, tp, provision.StreamOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := provision.EnsureConsumer(ctx, js, g, "", tp, settings); err != nil {
			t.Fatal(err)
		}
		b, err := mapping.Mapping{AppGUID: g, Topics: []string{tp}, Settings: settings}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, g, b); err != nil {
			t.Fatal(err)
		}
	}
}
