package cli_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/cli"
)

// syncBuffer is a bytes.Buffer safe to read while the command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestDashboardCF(t *testing.T) {
	g := NewWithT(t)
	Expect, Eventually := g.Expect, g.Eventually
	w := newCFWorld(t)
	var auth []string
	var mu sync.Mutex
	reject := "" // a token this scaler answers 401 to, as to an expired one
	sc := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		refused := r.Header.Get("Authorization") == reject
		mu.Unlock()
		if refused {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(rw, `{"error":"Cloud Controller rejected the token"}`)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, `{"path":"`+r.URL.Path+`","app":"`+r.URL.Query().Get("app")+`"}`)
	}))
	t.Cleanup(sc.Close)

	failsWith(t, run("dashboard", "--no-browser"), "which scaler? give --scaler URL or set HOTTOPIC_SCALER_URL")
	failsWith(t, run("dashboard", "--no-browser", "--scaler", sc.URL, "--listen", "0.0.0.0:0"), "listens on a loopback address only")

	ctx, cancel := context.WithCancel(context.Background())
	root := cli.NewRoot()
	var out syncBuffer
	root.SetOut(&out)
	root.SetArgs([]string{"dashboard", "--no-browser", "--scaler", sc.URL})
	done := make(chan error)
	go func() { done <- root.ExecuteContext(ctx) }()
	re := regexp.MustCompile(`(http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)`)
	Eventually(out.String, 10*time.Second).Should(MatchRegexp(re.String()))
	Expect(out.String()).To(ContainSubstring("in org acme / space dev"))
	u := re.FindStringSubmatch(out.String())[1]

	get := func(path string) (int, string) {
		resp, err := http.Get(u + path)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, page := get("")
	Expect(code).To(Equal(200))
	Expect(page).To(ContainSubstring("<title>Hot Topic</title>"))
	code, body := get("v1/dashboard")
	Expect(code).To(Equal(200))
	Expect(body).To(MatchJSON(`{"path":"/v1/dashboard","app":""}`))
	code, body = get("v1/dead-letters?app=abc")
	Expect(code).To(Equal(200))
	Expect(body).To(MatchJSON(`{"path":"/v1/dead-letters","app":"abc"}`))
	code, _ = get("v1/mappings")
	Expect(code).To(Equal(404), "only what the page reads is forwarded")
	mu.Lock()
	Expect(auth).To(HaveLen(2))
	Expect(auth[0]).To(HavePrefix("bearer "))
	Expect(auth[0]).To(Equal(w.config()["AccessToken"]))
	// Refused: the token is refreshed once (and saved for cf) and the call repeated.
	old := auth[0]
	reject = old
	mu.Unlock()
	code, body = get("v1/dashboard")
	Expect(code).To(Equal(200), body)
	mu.Lock()
	Expect(auth).To(HaveLen(4))
	Expect(auth[2]).To(Equal(old))
	Expect(auth[3]).NotTo(Equal(old))
	Expect(auth[3]).To(Equal(w.config()["AccessToken"]))
	mu.Unlock()

	cancel()
	Expect(<-done).To(Succeed())
}
