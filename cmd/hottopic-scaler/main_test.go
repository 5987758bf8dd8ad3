package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/mapping"
	"github.com/hottopic-io/hottopic/scalerapi"
)

func TestScalerCommand(t *testing.T) {
	spec.Run(t, "hottopic-scaler", testCommand, spec.Report(report.Terminal{}))
}

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

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func testCommand(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		bin        string
	)

	it.Before(func() {
		bin = filepath.Join(t.TempDir(), "hottopic-scaler")
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
	})

	start := func(env ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
		cmd := exec.Command(bin)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
		stdout, stderr := &syncBuffer{}, &syncBuffer{}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		Expect(cmd.Start()).To(Succeed())
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_, _ = cmd.Process.Wait()
		})
		return cmd, stdout, stderr
	}

	when("its configuration is incomplete", func() {
		it("exits 1 with one line naming what is missing", func() {
			cmd, _, stderr := start("HOTTOPIC_NATS_URL=nats://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y")
			err := cmd.Wait()
			Expect(err).To(HaveOccurred())
			Expect(cmd.ProcessState.ExitCode()).To(Equal(1))
			Expect(stderr.String()).To(Equal("hottopic-scaler: CF_API is not set (the Cloud Controller URL, e.g. https://api.example.com)\n"))

			cmd, _, stderr = start("CF_API=http://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y", "HOTTOPIC_NATS_URL=nats://127.0.0.1:1", "HOTTOPIC_POLL_INTERVAL=often")
			Expect(cmd.Wait()).To(HaveOccurred())
			Expect(stderr.String()).To(ContainSubstring("HOTTOPIC_POLL_INTERVAL must be a positive Go duration"))

			cmd, _, stderr = start("CF_API=http://127.0.0.1:1", "CF_CLIENT_ID=x", "CF_CLIENT_SECRET=y")
			Expect(cmd.Wait()).To(HaveOccurred())
			Expect(stderr.String()).To(ContainSubstring("no NATS server configured"))
		})
	})

	when("it runs against Cloud Controller and NATS", func() {
		it("serves its API, scales a mapped app on its first event and stops cleanly on SIGTERM", func() {
			ns := natstest.Run(t)
			cc := ccdouble.New(t)
			space := cc.AddSpace(cc.AddOrg("acme"), "prod")
			cc.AddClient("hottopic-scaler", "s3cret", ccdouble.SpaceDeveloper(space))
			guid := cc.AddApp(space, "thumbnailer", map[string]string{mapping.LabelMapped: "true"}, map[string]string{mapping.AnnTopics: "images.uploaded"})
			cc.SetInstances(guid, "web", 0)
			port := freePort(t)
			vcap := fmt.Sprintf(`{"user-provided":[{"name":"hottopic-nats","label":"user-provided","tags":["hottopic"],"credentials":{"uri":%q}}]}`, ns.URL())
			cmd, stdout, _ := start("CF_API="+cc.URL(), "CF_CLIENT_ID=hottopic-scaler", "CF_CLIENT_SECRET=s3cret",
				"VCAP_SERVICES="+vcap, fmt.Sprintf("PORT=%d", port),
				"HOTTOPIC_POLL_INTERVAL=100ms", "HOTTOPIC_DISCOVERY_INTERVAL=200ms")

			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			var body scalerapi.Mappings
			Eventually(func() bool {
				resp, err := http.Get(base + scalerapi.Path)
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				body = scalerapi.Mappings{}
				_ = json.NewDecoder(resp.Body).Decode(&body)
				return body.Leader && len(body.Mappings) == 1 && body.Mappings[0].LagKnown
			}, 20*time.Second, 100*time.Millisecond).Should(BeTrue(), stdout.String)
			Expect(body.Mappings[0].AppName).To(Equal("thumbnailer"))

			js, err := jetstream.New(ns.Connect())
			Expect(err).NotTo(HaveOccurred())
			_, err = js.Publish(context.Background(), "images.uploaded", []byte("cat.jpg"))
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() int { return cc.Instances(guid, "web") }, 10*time.Second).Should(Equal(1))
			Eventually(stdout.String, 5*time.Second).Should(ContainSubstring(`msg="scaled thumbnailer 0 → 1: lag 1, 10 per instance"`))

			resp, err := http.Get(base + "/healthz")
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(http.StatusOK))

			Expect(cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
			Expect(cmd.Wait()).To(Succeed())
			Expect(stdout.String()).To(ContainSubstring("scaler stopped"))
			Expect(stdout.String()).NotTo(ContainSubstring("s3cret"))
		})
	})
}
