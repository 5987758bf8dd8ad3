//go:build linux

// Package ops_test runs the operations commands against a real `hottopic
// dev`: dead letters of one of two apps on a topic, redrive to that app while
// it is scaled to zero (the scaler starts it for them), and replay; the other
// app never sees them again.
package ops_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/hottopic-io/hottopic/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

func TestOperations(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs hottopic dev with real processes")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed")
	}
	g := NewWithT(t)
	Expect, Eventually := g.Expect, g.Eventually
	bin := proctest.Build(t, "./cmd/hottopic")
	dir := t.TempDir()
	dataDir, fixed, envFile := filepath.Join(dir, "data"), filepath.Join(dir, "fixed"), filepath.Join(dir, "env")
	Expect(os.WriteFile(envFile, []byte("PICKY_FIXED="+fixed+"\n"), 0o600)).To(Succeed())

	dev := proctest.Start(t, exec.Command(bin, "dev", "-f", filepath.Join("testdata", "picky.yml"), "--env-file", envFile,
		"--data-dir", dataDir, "--nats-port", strconv.Itoa(proctest.FreePort(t)), "--poll-interval", "200ms", "--discovery-interval", "1s"))
	t.Cleanup(func() { _ = dev.Signal(os.Interrupt); <-dev.Done() })
	Eventually(dev.Out, 30*time.Second).Should(gbytes.Say(`\[HOTTOPIC/DEV\] ready: `))

	cli := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append(args, "--data-dir", dataDir)...)
		cmd.Env = append(os.Environ(), "HOTTOPIC_NATS_URL=", "VCAP_SERVICES=")
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			code = 1
		}
		return string(out), code
	}
	count := func(re string) func() int {
		return func() int { return len(regexp.MustCompile(re).FindAllString(dev.Output(), -1)) }
	}
	for _, ev := range []string{"bad-1", "bad-2", "good-1"} {
		out, code := cli("publish", "orders", ev)
		Expect(code).To(Equal(0), out)
	}

	Eventually(count(`audit \[APP/PROC/WEB/\d+\] OUT event \S+ \S+ -> 200`), 30*time.Second).Should(Equal(3))
	Eventually(func() string { out, _ := cli("dead-letters", "picky"); return out }, 30*time.Second).
		Should(MatchRegexp(`picky +orders .* 1 +HTTP 422 Unprocessable Entity: cannot parse bad-\d`), "the reason carries the start of the app's answer")
	out, _ := cli("dead-letters")
	Expect(out).To(ContainSubstring("picky: 2 dead letters"))
	Expect(out).NotTo(ContainSubstring("audit:"))

	// Idle: both apps go back to zero instances.
	Eventually(dev.Out, 30*time.Second).Should(gbytes.Say(`scaled picky \d+ → 0`))

	Expect(os.WriteFile(fixed, nil, 0o600)).To(Succeed())
	out, code := cli("redrive", "picky", "--wait", "60s")
	Expect(code).To(Equal(0), out)
	Expect(out).To(ContainSubstring("Redriving 2 dead letters to app picky"))
	Expect(out).To(ContainSubstring("redriven 2, failed 0"))
	Expect(dev.Out).To(gbytes.Say(`scaled picky 0 → \d`), "the redrive started the app from zero")
	Expect(count(`picky \[APP/PROC/WEB/\d+\] OUT event \S+ bad-\d -> 200`)()).To(Equal(2))
	// Under hottopic dev the app holds a broker binding, which cannot reach
	// HOTTOPIC_DLQ: the scaler deletes the redriven letters from the
	// sidecars' announcements, right after.
	Eventually(func() string { out, _ := cli("dead-letters"); return out }, 30*time.Second).Should(ContainSubstring("No dead letters."))

	out, code = cli("replay", "picky", "--topic", "orders", "--since", "10m")
	Expect(code).To(Equal(0), out)
	Expect(out).To(ContainSubstring("replayed 3 events"))
	Eventually(count(`picky \[APP/PROC/WEB/\d+\] OUT event \S+ good-1 -> 200`), 30*time.Second).Should(Equal(2))
	Eventually(count(`picky \[APP/PROC/WEB/\d+\] OUT event \S+ bad-\d -> 200`), 30*time.Second).Should(Equal(4))
	// audit saw each event once, whatever picky got again.
	Expect(count(`audit \[APP/PROC/WEB/\d+\] OUT event`)()).To(Equal(3))
}
