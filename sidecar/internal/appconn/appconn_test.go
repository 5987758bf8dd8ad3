package appconn_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/sidecar/internal/appconn"
)

func TestAppConn(t *testing.T) {
	spec.Run(t, "appconn", testAppConn, spec.Report(report.Terminal{}))
}

// server is a net/http app that counts the connections it accepted.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	conns  int
	closed int
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch st {
		case http.StateNew:
			s.conns++
		case http.StateClosed, http.StateHijacked:
			s.closed++
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *server) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *server) closedConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *server) addr() string { return strings.TrimPrefix(s.URL, "http://") }

// rawServer answers every connection with the handler's bytes, for
// responses net/http would never write.
func rawServer(t *testing.T, answer func(c net.Conn, r *bufio.Reader)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				answer(c, bufio.NewReader(c))
			}()
		}
	}()
	return l.Addr().String()
}

// readRequest consumes one request from r.
func readRequest(r *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(r)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err
}

func testAppConn(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		later      = func() time.Time { return time.Now().Add(10 * time.Second) }
		hdr        = func(kv ...string) []byte {
			var b []byte
			for i := 0; i < len(kv); i += 2 {
				var err error
				b, err = appconn.AppendHeader(b, kv[i], kv[i+1])
				Expect(err).NotTo(HaveOccurred())
			}
			return b
		}
	)

	it("keeps the start of an error answer's body, made printable, and nothing of a 2xx one", func() {
		long := strings.Repeat("a", appconn.ErrorBodyBytes-1) + "é and more"
		bodies := map[string]string{
			"/plain":   `{"error":"missing field \"id\""}`,
			"/control": "line one\r\nline\ttwo\x00\x1b[31m\xff\u0085end",
			"/long":    long,
			"/empty":   "",
		}
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/ok" {
				_, _ = w.Write([]byte("fine"))
				return
			}
			if r.URL.Path == "/long" {
				w.Header().Set("Transfer-Encoding", "chunked") // no length: read to the end all the same
			}
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = w.Write([]byte(bodies[r.URL.Path]))
		})
		c := appconn.New(s.addr(), time.Second)
		t.Cleanup(c.Close)
		texts := map[string]string{}
		for path := range bodies {
			resp, err := c.Post(later(), path, nil, []byte("x"), 0)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(422))
			texts[path] = resp.ErrorText()
		}
		Expect(texts).To(Equal(map[string]string{
			"/plain":   `{"error":"missing field \"id\""}`,
			"/control": `line one\r\nline\ttwo\x00\x1b[31m\xff\u0085end`,
			"/long":    strings.Repeat("a", appconn.ErrorBodyBytes-1) + "…", // the cut "é" is dropped
			"/empty":   "",
		}))
		Expect(s.accepted()).To(Equal(1), "the error bodies were read whole: the connection stays usable")

		resp, err := c.Post(later(), "/ok", nil, []byte("x"), 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.ErrorBody).To(BeNil(), "a 2xx answer keeps nothing")
		Expect(resp.ErrorText()).To(BeEmpty())
	})

	it("POSTs path, headers and body, and reuses one connection", func() {
		type got struct {
			method, uri, host, ce, ct string
			length                    int64
			body                      string
		}
		gots := make(chan got, 10)
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			gots <- got{r.Method, r.RequestURI, r.Host, r.Header.Get("Ce-Id"), r.Header.Get("Content-Type"), r.ContentLength, string(b)}
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte("ignored"))
		})
		c := appconn.New(s.addr(), time.Second)
		defer c.Close()
		for i := 0; i < 5; i++ {
			resp, err := c.Post(later(), "/events/in%20box", hdr("Ce-Id", "id-1", "Content-Type", "application/json"), []byte(`{"n":1}`), 0)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(http.StatusAccepted))
			Expect(resp.Get("retry-after")).To(Equal("7"))
			Expect(resp.Body).To(BeNil())
			Expect(<-gots).To(Equal(got{"POST", "/events/in%20box", s.addr(), "id-1", "application/json", 7, `{"n":1}`}))
		}
		Expect(s.accepted()).To(Equal(1))
	})

	it("reads a 2xx body when asked, chunked with trailers or by length, and keeps the connection", func() {
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Ce-Type", "out.type")
			if r.URL.Path == "/chunked" {
				w.Header().Set("Trailer", "X-Sum")
				_, _ = w.Write([]byte("hello "))
				w.(http.Flusher).Flush() // forces chunked encoding
				_, _ = w.Write([]byte("world"))
				w.Header().Set("X-Sum", "42")
				return
			}
			_, _ = w.Write([]byte("by length"))
		})
		c := appconn.New(s.addr(), time.Second)
		defer c.Close()
		for _, path := range []string{"/chunked", "/plain", "/chunked", "/chunked"} {
			resp, err := c.Post(later(), path, nil, []byte("x"), 1<<20)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(http.StatusOK))
			if path == "/chunked" {
				Expect(resp.Get("Transfer-Encoding")).To(Equal("chunked"))
				Expect(string(resp.Body)).To(Equal("hello world"))
			} else {
				Expect(string(resp.Body)).To(Equal("by length"))
			}
			var ce []string
			resp.VisitHeaders(func(k, v string) {
				if k == "Ce-Type" {
					ce = append(ce, v)
				}
			})
			Expect(ce).To(Equal([]string{"out.type"}))
			// Discarded when not asked for; the connection stays usable.
			resp, err = c.Post(later(), path, nil, []byte("x"), 0)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Body).To(BeNil())
		}
		Expect(s.accepted()).To(Equal(1))
	})

	it("refuses a body over the limit and carries on with a new connection", func() {
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("0123456789abcdef"))
		})
		c := appconn.New(s.addr(), time.Second)
		defer c.Close()
		_, err := c.Post(later(), "/", nil, nil, 10)
		Expect(err).To(MatchError(appconn.ErrBodyTooLarge))
		resp, err := c.Post(later(), "/", nil, nil, 16)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Body)).To(Equal("0123456789abcdef"))
		Expect(s.accepted()).To(Equal(2))
	})

	it("sends large bodies and reads large answers whole, keeping the connection", func() {
		big := bytes.Repeat([]byte("b"), 3<<20)
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			if n != int64(len(big)) {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if r.URL.Path == "/huge" {
				_, _ = w.Write(big)
				return
			}
			_, _ = w.Write(big[:512<<10])
		})
		c := appconn.New(s.addr(), time.Second)
		defer c.Close()
		for _, path := range []string{"/half", "/half", "/huge", "/half"} {
			resp, err := c.Post(later(), path, nil, big, 0)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(http.StatusOK))
		}
		Expect(s.accepted()).To(Equal(1))
	})

	it("skips 1xx interim responses", func() {
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusNoContent)
		})
		c := appconn.New(s.addr(), time.Second)
		defer c.Close()
		for i := 0; i < 2; i++ {
			resp, err := c.Post(later(), "/", nil, []byte("x"), 1<<10)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(http.StatusNoContent))
		}
		Expect(s.accepted()).To(Equal(1))
	})

	it("dials again after Connection: close, and after the app closed the idle connection", func() {
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/close" {
				w.Header().Set("Connection", "close")
			}
			w.WriteHeader(http.StatusOK)
		})
		c := appconn.New(s.addr(), time.Second)
		defer c.Close()
		_, err := c.Post(later(), "/close", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		_, err = c.Post(later(), "/", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(s.accepted()).To(Equal(2))

		s.CloseClientConnections() // the app's idle timeout
		Eventually(s.closedConns).Should(Equal(2))
		resp, err := c.Post(later(), "/", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Status).To(Equal(http.StatusOK))
		Expect(s.accepted()).To(Equal(3))
	})

	it("fails at the deadline, and Abort fails the Post in progress and every later one", func() {
		arrived, release := make(chan struct{}, 2), make(chan struct{})
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-release
		})
		defer close(release)
		c := appconn.New(s.addr(), time.Second)
		_, err := c.Post(time.Now().Add(50*time.Millisecond), "/", nil, nil, 0)
		Expect(errors.Is(err, os.ErrDeadlineExceeded)).To(BeTrue(), "%v", err)
		<-arrived

		done := make(chan error)
		go func() {
			_, err := c.Post(later(), "/", nil, nil, 0)
			done <- err
		}()
		<-arrived
		c.Abort()
		Expect(<-done).To(MatchError(appconn.ErrAborted))
		_, err = c.Post(later(), "/", nil, nil, 0)
		Expect(err).To(MatchError(appconn.ErrAborted))
	})

	it("reports a refused connection, then works once the app listens", func() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		addr := l.Addr().String()
		Expect(l.Close()).To(Succeed())
		c := appconn.New(addr, time.Second)
		_, err = c.Post(later(), "/", nil, nil, 0)
		Expect(err).To(MatchError(ContainSubstring("connection refused")))

		l, err = net.Listen("tcp", addr)
		Expect(err).NotTo(HaveOccurred())
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
		resp, err := c.Post(later(), "/", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Status).To(Equal(http.StatusOK))
	})

	it("handles HTTP/1.0 answers, bodies ended by close, and folded headers", func() {
		var mu sync.Mutex
		conns := 0
		addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
			mu.Lock()
			conns++
			mu.Unlock()
			for {
				req, err := readRequest(r)
				if err != nil {
					return
				}
				switch req.URL.Path {
				case "/http10":
					_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
				case "/http10-keep":
					_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
				case "/until-close":
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\n\r\nbody until close")
					return
				case "/bad":
					_, _ = io.WriteString(c, "HTP/1.1 200 OK\r\n\r\n")
				case "/gzip":
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
				}
			}
		})
		c := appconn.New(addr, time.Second)
		defer c.Close()
		count := func() int { mu.Lock(); defer mu.Unlock(); return conns }

		resp, err := c.Post(later(), "/until-close", nil, nil, 1<<10)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Body)).To(Equal("body until close"))
		Expect(resp.Get("x-folded")).To(Equal("a b"))
		_, err = c.Post(later(), "/http10-keep", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		_, err = c.Post(later(), "/http10-keep", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(count()).To(Equal(2))
		_, err = c.Post(later(), "/http10", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		_, err = c.Post(later(), "/http10", nil, nil, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(count()).To(Equal(3)) // 1.0 without keep-alive: one request each

		_, err = c.Post(later(), "/bad", nil, nil, 0)
		Expect(err).To(MatchError(ContainSubstring("malformed status line")))
		_, err = c.Post(later(), "/gzip", nil, nil, 0)
		Expect(err).To(MatchError(ContainSubstring("unsupported Transfer-Encoding")))
	})

	it("AppendHeader refuses what net/http refuses", func() {
		b, err := appconn.AppendHeader(nil, "Ce-Id", " a\tb ")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(Equal("Ce-Id: a\tb\r\n"))
		_, err = appconn.AppendHeader(nil, "Ce Id", "x")
		Expect(err).To(MatchError(`invalid header field name "Ce Id"`))
		_, err = appconn.AppendHeader(nil, "", "x")
		Expect(err).To(HaveOccurred())
		_, err = appconn.AppendHeader(nil, "Ce-Id", "a\r\nX-Evil: 1")
		Expect(err).To(MatchError(`invalid header field value for "Ce-Id"`))
	})
	// Issue 11: each answer belongs to exactly one request, or the
	// connection is dropped.
	when("the app answers badly (issue 11)", func() {
		ok := func(b string) string {
			return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + b
		}

		it("never takes a response the app sent unasked on the idle connection for the next request's", func() {
			answered, strayed := make(chan struct{}), make(chan struct{})
			var once sync.Once
			addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
				for n := 1; ; n++ {
					if _, err := readRequest(r); err != nil {
						return
					}
					_, _ = io.WriteString(c, ok("answer"+strconv.Itoa(n)))
					once.Do(func() { // once the answer was read: on the idle connection
						<-answered
						_, _ = io.WriteString(c, ok("STRAY"))
						close(strayed)
					})
				}
			})
			c := appconn.New(addr, time.Second)
			defer c.Close()
			resp, err := c.Post(later(), "/", nil, []byte("1"), 1<<10)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(resp.Body)).To(Equal("answer1"))
			close(answered)
			<-strayed
			resp, err = c.Post(later(), "/", nil, []byte("2"), 1<<10)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(resp.Body)).To(Equal("answer1")) // a new connection's first answer
		})

		it("sends again, on a new connection, a request that met a connection the app closed after its answer", func() {
			var mu sync.Mutex
			got := 0
			addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
				if _, err := readRequest(r); err != nil {
					return
				}
				mu.Lock()
				got++
				mu.Unlock()
				_, _ = io.WriteString(c, ok("ok")) // and close, without saying so
			})
			c := appconn.New(addr, time.Second)
			defer c.Close()
			for i := 0; i < 20; i++ {
				resp, err := c.Post(later(), "/", nil, []byte("x"), 1<<10)
				Expect(err).NotTo(HaveOccurred(), "request %d", i)
				Expect(string(resp.Body)).To(Equal("ok"))
			}
			mu.Lock()
			defer mu.Unlock()
			Expect(got).To(Equal(20))
		})

		it("fails an answer cut short, with or without a body wanted", func() {
			addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
				if _, err := readRequest(r); err == nil {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				}
			})
			c := appconn.New(addr, time.Second)
			defer c.Close()
			_, err := c.Post(later(), "/", nil, nil, 1<<10)
			Expect(err).To(MatchError(io.ErrUnexpectedEOF))
			_, err = c.Post(later(), "/", nil, nil, 0)
			Expect(err).To(MatchError(io.ErrUnexpectedEOF))
			Expect(err).To(MatchError(appconn.ErrBadResponse))
			Expect(err).To(MatchError(ContainSubstring("incomplete body: 7 of 100 bytes")))
		})

		it("refuses a Content-Length that is not all digits", func() {
			for _, v := range []string{"+5", "-5", " 5x", "5, 5", "0x5"} {
				addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
					if _, err := readRequest(r); err == nil {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+v+"\r\n\r\nHELLO")
					}
				})
				c := appconn.New(addr, time.Second)
				_, err := c.Post(later(), "/", nil, nil, 1<<10)
				Expect(err).To(MatchError(appconn.ErrBadResponse), v)
				c.Close()
			}
		})

		it("reads an early answer while the request body is still being written", func() {
			hold := make(chan struct{})
			defer close(hold)
			addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
				if _, err := http.ReadRequest(r); err == nil { // the body is not read
					_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
					<-hold
				}
			})
			c := appconn.New(addr, time.Second)
			defer c.Close()
			resp, err := c.Post(later(), "/", nil, bytes.Repeat([]byte("x"), 8<<20), 0)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(http.StatusRequestEntityTooLarge))
		})

		it("reads an answer with more than 1 000 header fields", func() {
			var many strings.Builder
			for i := range 1001 {
				fmt.Fprintf(&many, "X-H%d: v\r\n", i)
			}
			addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
				if _, err := readRequest(r); err == nil {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n"+many.String()+"Content-Length: 2\r\n\r\nok")
				}
			})
			c := appconn.New(addr, time.Second)
			defer c.Close()
			resp, err := c.Post(later(), "/", nil, nil, 1<<10)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Get("x-h1000")).To(Equal("v"))
			Expect(string(resp.Body)).To(Equal("ok"))
		})
	})
}
