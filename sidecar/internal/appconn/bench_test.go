package appconn_test

// Issue 14 asks to re-weigh the own HTTP/1.1 client against net/http's once
// batches exist, at batch 1 and 100, in the same run. Both clients here POST
// the same bodies to the same no-op net/http server in this process, one
// request in flight, so ns/op is the round trip and the server's share is the
// same for both; the difference is the client's.
//
//	go test -run '^$' -bench Client -benchmem -count 5 ./sidecar/internal/appconn/

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hottopic-io/hottopic/sidecar/internal/appconn"
)

// benchBody is what the sidecar POSTs for n events of 128 B: the event
// itself (binary mode) for 1, a CloudEvents batch of structured events for more.
func benchBody(n int) (contentType string, body []byte) {
	data := bytes.Repeat([]byte("x"), 128)
	if n == 1 {
		return "application/octet-stream", data
	}
	evs := make([]map[string]any, n)
	for i := range evs {
		evs[i] = map[string]any{
			"specversion": "1.0", "id": "HT_bench-" + strconv.Itoa(i), "source": "hottopic/bench",
			"type": "hottopic.event", "time": "2026-12-02T07:00:00Z", "subject": "bench",
			"datacontenttype": "application/octet-stream", "data_base64": data,
		}
	}
	b, _ := json.Marshal(evs)
	return "application/cloudevents-batch+json", b
}

func benchServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "0")
	})}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func BenchmarkClient(b *testing.B) {
	for _, n := range []int{1, 100} {
		ct, body := benchBody(n)
		b.Run(fmt.Sprintf("own/batch=%d", n), func(b *testing.B) {
			addr := benchServer(b)
			c := appconn.New(addr, time.Second)
			defer c.Close()
			hdr, _ := appconn.AppendHeader(nil, "Content-Type", ct)
			hdr, _ = appconn.AppendHeader(hdr, "Ce-Id", "HT_bench-1")
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Post(time.Now().Add(10*time.Second), "/", hdr, body, 0)
				if err != nil || resp.Status != 200 {
					b.Fatalf("post: %v", err)
				}
			}
		})
		b.Run(fmt.Sprintf("net-http/batch=%d", n), func(b *testing.B) {
			addr := benchServer(b)
			tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 16}
			defer tr.CloseIdleConnections()
			url := "http://" + addr + "/"
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", ct)
				req.Header.Set("Ce-Id", "HT_bench-1")
				resp, err := tr.RoundTrip(req)
				if err != nil || resp.StatusCode != 200 {
					b.Fatalf("post: %v", err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
}
