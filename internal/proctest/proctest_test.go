package proctest_test

import (
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

func TestProctest(t *testing.T) {
	spec.Run(t, "proctest", testProctest, spec.Report(report.Terminal{}))
}

func testProctest(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
	)

	it("kills the whole process group when the test ends", func() {
		var child int
		t.Run("inner", func(t *testing.T) {
			p := proctest.Start(t, exec.Command("sh", "-c", `sleep 300 & echo "child $!"; wait`))
			NewWithT(t).Eventually(p.Out, 10*time.Second).Should(gbytes.Say(`child \d+`))
			child, _ = strconv.Atoi(regexp.MustCompile(`child (\d+)`).FindStringSubmatch(p.Output())[1])
		})
		Expect(child).To(BeNumerically(">", 0))
		Eventually(func() bool { return alive(child) }, 10*time.Second).Should(BeFalse(), "the grandchild outlived the test")
	})

	it("collects output and the exit code, and keeps a stream the caller set", func() {
		var stderr strings.Builder
		cmd := exec.Command("sh", "-c", "echo out; echo err >&2; exit 3")
		cmd.Stderr = &stderr
		p := proctest.Start(t, cmd)
		Expect(p.Wait()).To(HaveOccurred())
		Expect(p.Exited()).To(BeTrue())
		Expect(p.ExitCode()).To(Equal(3))
		Expect(p.Output()).To(Equal("out\n"))
		Expect(stderr.String()).To(Equal("err\n"))
	})

	it("runs a command to completion", func() {
		out, code := proctest.Run(t, exec.Command("sh", "-c", "echo hi; exit 2"), time.Minute)
		Expect(out).To(Equal("hi\n"))
		Expect(code).To(Equal(2))
	})

	it("builds a command of this module once", func() {
		bin := proctest.Build(t, "./cmd/hottopic-scaler")
		Expect(bin).To(BeAnExistingFile())
		Expect(proctest.Build(t, "./cmd/hottopic-scaler")).To(Equal(bin))
		p := proctest.Start(t, exec.Command(bin))
		Expect(p.ExitCode()).To(Equal(1)) // no configuration
	})

	it("finds a free loopback port", func() {
		Expect(proctest.FreePort(t)).To(BeNumerically(">", 0))
	})
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(stat), ") Z ")
}

func TestFreePortRun(t *testing.T) {
	port := proctest.FreePortRun(t, 3)
	for i := range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+i))
		if err != nil {
			t.Fatalf("port %d of the run starting at %d: %v", port+i, port, err)
		}
		_ = l.Close()
	}
}
