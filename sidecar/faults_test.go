package sidecar_test

// Faults of issue 11 at the sidecar: apps that answer HTTP badly (raw-TCP
// fake apps, so every byte is the test's), a graceful stop with events in
// hand, and an output topic without a stream.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
)

func TestFaults(t *testing.T) {
	spec.Run(t, "faults", testFaults, spec.Report(report.Terminal{}))
}

// rawApp is a function app written on raw TCP: answer writes whatever bytes
// it likes for request n (0-based, over all connections) and says whether
// to keep reading requests on the connection. answer must consume the
// request body itself (or not).
type rawApp struct {
	port   int
	ln     net.Listener
	answer func(c net.Conn, req *http.Request, n int) (keep bool)

	mu     sync.Mutex
	got    []delivery
	closed int // connections the sidecar closed (EOF while reading a request)
}

func newRawApp(t *testing.T, answer func(c net.Conn, req *http.Request, n int) bool) *rawApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &rawApp{port: ln.Addr().(*net.TCPAddr).Port, ln: ln, answer: answer}
	var conns sync.Map
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			go a.serve(c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
	})
	return a
}

func (a *rawApp) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if err == io.EOF {
				a.mu.Lock()
				a.closed++
				a.mu.Unlock()
			}
			return
		}
		a.mu.Lock()
		n := len(a.got)
		a.got = append(a.got, delivery{Header: req.Header.Clone()})
		a.mu.Unlock()
		if !a.answer(c, req, n) {
			return
		}
	}
}

func (a *rawApp) deliveries() []delivery {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]delivery(nil), a.got...)
}

func (a *rawApp) attempts() []string {
	var out []string
	for _, d := range a.deliveries() {
		out = append(out, d.Header.Get("Hottopic-Delivery"))
	}
	return out
}

func (a *rawApp) closedConns() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

func body(req *http.Request) string {
	b, _ := io.ReadAll(req.Body)
	return string(b)
}

func write(c net.Conn, s string) { _, _ = io.WriteString(c, s) }

func ok200(b string) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + b
}

func testFaults(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		srv        *natstest.Server
		nc         *nats.Conn
		js         jetstream.JetStream
		guid       = "6f1c2a4e-0000-4000-8000-0000000000fa"
		stream     = topic.StreamName("orders.created")
		ctx        = context.Background()
	)

	it.Before(func() {
		srv = natstest.Run(t)
		nc = srv.Connect()
		js = jsFor(t, nc)
		// The output topic's stream keeps what it gets (not interest
		// retention), so the test can read every output back.
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"orders.done"}})
		Expect(err).NotTo(HaveOccurred())
	})

	waitConsuming := func(p interface{ Output() string }) {
		Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
	}
	// outputs is the output stream's messages: data by the input event's sequence.
	outputs := func() map[uint64]string {
		out := map[uint64]string{}
		s, err := js.Stream(ctx, "OUT")
		if err != nil {
			return out
		}
		for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			id := m.Header.Get(jetstream.MsgIDHeader)
			in, _ := strconv.ParseUint(id[strings.LastIndexByte(id, ':')+1:], 10, 64)
			if _, dup := out[in]; dup {
				out[in] += " AND " + string(m.Data)
				continue
			}
			out[in] = string(m.Data)
		}
		return out
	}
	ackFloor := func() uint64 { return consumerInfo(t, js, stream, guid).AckFloor.Stream }
	sidecar := func(port int, extra ...string) interface{ Output() string } {
		e := env(guid, port, srv.URL(), append([]string{"HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_OUTPUT_TOPIC", "orders.done"}, extra...)...)
		p := startSidecar(t, e)
		waitConsuming(p)
		return p
	}

	when("the app's HTTP answer is faulty", func() {
		it("fails a 2xx whose body is cut short (Content-Length 100, 7 bytes, close), and publishes nothing of it", func() {
			app := newRawApp(t, func(c net.Conn, req *http.Request, n int) bool {
				body(req)
				if req.Header.Get("Hottopic-Delivery") == "1" {
					write(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
					return false
				}
				write(c, ok200("full"))
				return true
			})
			p := sidecar(app.port)
			publishN(t, js, "orders.created", 1, "e")
			Eventually(outputs, 15*time.Second).Should(Equal(map[uint64]string{1: "full"}))
			Expect(app.attempts()).To(Equal([]string{"1", "2"}))
			Expect(p.Output()).To(ContainSubstring("bad HTTP response: incomplete body: 7 of 100 bytes"))
		})

		it("drops a connection that sends a response nobody asked for, and answers each event with its own response", func() {
			answered, strayed := make(chan struct{}), make(chan struct{})
			app := newRawApp(t, func(c net.Conn, req *http.Request, n int) bool {
				b := body(req)
				write(c, ok200("re:"+b))
				if n == 0 { // then, once the answer was taken, a stray one on the idle connection
					go func() { <-answered; write(c, ok200("STRAY")); close(strayed) }()
				}
				return true
			})
			sidecar(app.port)
			publishN(t, js, "orders.created", 1, "e")
			Eventually(outputs, 10*time.Second).Should(Equal(map[uint64]string{1: "re:e0"}))
			Eventually(ackFloor, 10*time.Second).Should(Equal(uint64(1)))
			close(answered)
			Eventually(strayed, 10*time.Second).Should(BeClosed())
			// Every later event gets its own answer, first time...
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			for i := 1; i < 5; i++ {
				_, err := js.Publish(ctx, "orders.created", []byte("e"+strconv.Itoa(i)))
				Expect(err).NotTo(HaveOccurred())
			}
			Eventually(ackFloor, 10*time.Second).Should(Equal(uint64(5)))
			Expect(outputs()).To(Equal(map[uint64]string{1: "re:e0", 2: "re:e1", 3: "re:e2", 4: "re:e3", 5: "re:e4"}))
			Expect(app.attempts()).To(Equal([]string{"1", "1", "1", "1", "1"}))
			// ...and the connection that said too much was hung up.
			Eventually(app.closedConns, 10*time.Second).Should(Equal(1))
		})

		it("never spends an attempt on a connection the app closed while idle (no Connection: close)", func() {
			app := newRawApp(t, func(c net.Conn, req *http.Request, n int) bool {
				write(c, ok200("re:"+body(req)))
				return false // and close, without saying so
			})
			sidecar(app.port)
			publishN(t, js, "orders.created", 8, "e")
			Eventually(ackFloor, 15*time.Second).Should(Equal(uint64(8)))
			Expect(app.attempts()).To(Equal([]string{"1", "1", "1", "1", "1", "1", "1", "1"}))
			Expect(outputs()).To(HaveLen(8))
		})

		it("fails an answer with Content-Length: +5 (RFC 9112 §6.3)", func() {
			app := newRawApp(t, func(c net.Conn, req *http.Request, n int) bool {
				body(req)
				if n == 0 {
					write(c, "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nHELLO")
					return true
				}
				write(c, ok200("good"))
				return true
			})
			sidecar(app.port)
			publishN(t, js, "orders.created", 1, "e")
			Eventually(outputs, 15*time.Second).Should(Equal(map[uint64]string{1: "good"}))
			Expect(app.attempts()).To(Equal([]string{"1", "2"}))
		})

		it("takes an early 413, sent while the request body is still being written, as the answer", func() {
			hold := make(chan struct{})
			t.Cleanup(func() { close(hold) })
			app := newRawApp(t, func(c net.Conn, req *http.Request, n int) bool {
				// Not reading the 4 MB body: the sidecar's write stalls.
				write(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				<-hold
				return false
			})
			sidecar(app.port, "HOTTOPIC_TIMEOUT_SECONDS", "5", "HOTTOPIC_MAX_DELIVER", "2")
			_, err := js.Publish(ctx, "orders.created", []byte(strings.Repeat("x", 4<<20)))
			Expect(err).NotTo(HaveOccurred())
			dlq := dlqMessages(t, js, 1)
			Expect(dlq[0].Header.Get(provision.HeaderReason)).To(ContainSubstring("413"))
			Expect(dlq[0].Header.Get(provision.HeaderDeliveries)).To(Equal("1"))
		})

		it("reads an answer with more than 1 000 header fields", func() {
			var many strings.Builder
			for i := range 1001 {
				fmt.Fprintf(&many, "X-H%d: v\r\n", i)
			}
			app := newRawApp(t, func(c net.Conn, req *http.Request, n int) bool {
				body(req)
				write(c, "HTTP/1.1 200 OK\r\n"+many.String()+"Content-Length: 2\r\n\r\nok")
				return true
			})
			sidecar(app.port)
			publishN(t, js, "orders.created", 1, "e")
			Eventually(ackFloor, 15*time.Second).Should(Equal(uint64(1)))
			Expect(app.attempts()).To(Equal([]string{"1"}))
			Expect(outputs()).To(Equal(map[uint64]string{1: "ok"}))
		})
	})

	it("on a graceful stop gives back the events it holds without counting a delivery (max-deliver 1)", func() {
		release := make(chan struct{})
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			<-release
			w.WriteHeader(http.StatusOK)
		}).start(t)
		e := env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_MAX_DELIVER", "1")
		p := startSidecar(t, e)
		waitConsuming(p)
		publishN(t, js, "orders.created", 5, "g")
		Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(1))
		Expect(p.Signal(syscall.SIGTERM)).To(Succeed())
		Eventually(p.Output, 5*time.Second).Should(ContainSubstring("shutting down"))
		close(release)
		Eventually(p.Exited, 12*time.Second).Should(BeTrue())
		Expect(p.ExitCode()).To(Equal(0))

		startSidecar(t, e)
		Eventually(ackFloor, 15*time.Second).Should(Equal(uint64(5)))
		Expect(app.bodies()).To(Equal(map[string]int{"g0": 1, "g1": 1, "g2": 1, "g3": 1, "g4": 1}))
		for _, d := range app.deliveries() {
			Expect(d.Header.Get("Hottopic-Delivery")).To(Equal("1"), d.Body)
		}
	})

	it("publishes to an output topic without a stream at once, once per event, though a core subscriber listens on it", func() {
		var mu sync.Mutex
		var seen []string
		_, err := nc.Subscribe("orders.new", func(m *nats.Msg) {
			mu.Lock()
			seen = append(seen, string(m.Data))
			mu.Unlock()
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(nc.Flush()).To(Succeed())
		app := newApp(t, 0, func(d delivery, w http.ResponseWriter) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("done:" + d.Body))
		}).start(t)
		p := startSidecar(t, env(guid, app.port, srv.URL(), "HOTTOPIC_TOPICS", "orders.created", "HOTTOPIC_OUTPUT_TOPIC", "orders.new"))
		waitConsuming(p)
		publishN(t, js, "orders.created", 2, "o")
		Eventually(ackFloor, 15*time.Second).Should(Equal(uint64(2)))
		_, err = js.Stream(ctx, topic.StreamName("orders.new"))
		Expect(err).NotTo(HaveOccurred())
		Expect(nc.Flush()).To(Succeed())
		mu.Lock()
		defer mu.Unlock()
		Expect(seen).To(ConsistOf("done:o0", "done:o1"))
		for _, d := range app.deliveries() {
			Expect(d.Header.Get("Hottopic-Delivery")).To(Equal("1"), d.Body)
		}
	})
}
