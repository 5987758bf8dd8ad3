//go:build linux

// Package dev_test runs `hottopic dev` as a real process on the wordcount
// example: scale from zero under load, every event processed, back to zero,
// a restart that loses no queued event, Ctrl-C that leaves no process, and a
// broken manifest refused with its line number.
package dev_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/proctest"
	"github.com/hottopic-io/hottopic/scaler/api"
)

var bin string

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

func TestDev(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs hottopic dev with real processes")
	}
	for _, tool := range []string{"python3", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	bin = proctest.Build(t, "./cmd/hottopic")
	spec.Run(t, "Dev", testDev, spec.Report(report.Terminal{}))
}

// devProc is one running `hottopic dev`.
type devProc struct {
	*proctest.Proc
	dataDir string
	marker  string
}

func testDev(t *testing.T, when spec.G, it spec.S) {
	var (
		dataDir  string
		natsPort int
		marker   string
	)

	it.Before(func() {
		RegisterTestingT(t)
		dataDir = filepath.Join(t.TempDir(), "data")
		natsPort = proctest.FreePortRun(t, 3) // --cluster takes the two after it too
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		marker = hex.EncodeToString(b)
		// Whatever happens, no process of this test outlives it.
		t.Cleanup(func() { killMarked(marker) })
	})

	start := func(manifest string, extra ...string) *devProc {
		cmd := exec.Command(bin, append([]string{"dev", "-f", filepath.Join("testdata", manifest),
			"--data-dir", dataDir, "--nats-port", strconv.Itoa(natsPort),
			"--poll-interval", "200ms", "--discovery-interval", "1s"}, extra...)...)
		cmd.Env = append(os.Environ(), "DEVTEST_MARKER="+marker)
		d := &devProc{Proc: proctest.Start(t, cmd), dataDir: dataDir, marker: marker}
		Eventually(d.Out, 30*time.Second).Should(gbytes.Say(`\[HOTTOPIC/DEV\] ready: `))
		return d
	}

	// publishCmd runs hottopic publish; the address comes from the running
	// runtime's record, as a user's would.
	publishCmd := func(d *devProc, args ...string) (string, error) {
		cmd := exec.Command(bin, append(append([]string{"publish"}, args...), "--data-dir", d.dataDir)...)
		cmd.Env = withoutNATSEnv(os.Environ())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	publishTo := func(d *devProc, n int, data string, extra ...string) {
		out, err := publishCmd(d, append([]string{"words", data, "--count", strconv.Itoa(n)}, extra...)...)
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring(fmt.Sprintf("published %d events to words", n)))
	}

	publish := func(d *devProc, n int) {
		publishTo(d, n, "the quick brown fox jumps over the lazy dog")
	}

	// processed counts deliveries by event id: hottopic publish gives each
	// event a Nats-Msg-Id of its own, which is its ce-id.
	processed := func(d *devProc) map[string]int {
		ids := map[string]int{}
		for _, m := range regexp.MustCompile(`wordcount \[APP/PROC/WEB/\d+\] OUT event (\S+) \(delivery`).FindAllStringSubmatch(d.Output(), -1) {
			ids[m[1]]++
		}
		return ids
	}

	stop := func(d *devProc) {
		Expect(d.Signal(syscall.SIGINT)).To(Succeed())
		Eventually(d.Done(), 30*time.Second).Should(BeClosed())
		Expect(d.ExitCode()).To(Equal(0), "hottopic dev exit code")
		Expect(marked(d.marker)).To(BeEmpty(), "processes left behind after Ctrl-C")
		_, err := os.Stat(filepath.Join(d.dataDir, "runtime.json"))
		Expect(os.IsNotExist(err)).To(BeTrue(), "runtime.json is removed on a clean stop")
	}

	it("scales from zero under load, processes every event, and goes back to zero", func() {
		d := start("wordcount.yml")
		st, err := state.Read(dataDir)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.NATSURL).To(Equal(fmt.Sprintf("nats://127.0.0.1:%d", natsPort)))
		Expect(mappingOf(st.ScalerURL, "wordcount").CurrentInstances).To(HaveValue(Equal(0)))

		publish(d, 500)
		// The first poll may see only the start of the burst (0 → 1); the
		// scaler must go above one instance while the 500 are queued.
		Eventually(d.Out, 10*time.Second).Should(gbytes.Say(`\[HOTTOPIC/SCALER\] scaled wordcount 0 → \d+: lag \d+`))
		Eventually(func() int {
			most := 0
			for _, m := range regexp.MustCompile(`scaled wordcount \d+ → (\d+)`).FindAllStringSubmatch(d.Output(), -1) {
				n, _ := strconv.Atoi(m[1])
				most = max(most, n)
			}
			return most
		}, 20*time.Second).Should(BeNumerically(">", 1), "scaled above one instance")
		Eventually(d.Output).Should(MatchRegexp(`wordcount \[APP/PROC/WEB/1/hottopic\] `), "each instance runs its sidecar")

		Eventually(func() int { return len(processed(d)) }, 45*time.Second).Should(Equal(500), "every event processed at least once")

		Eventually(d.Out, 20*time.Second).Should(gbytes.Say(`\[HOTTOPIC/SCALER\] scaled wordcount \d+ → 0`))
		m := mappingOf(st.ScalerURL, "wordcount")
		Expect(m.Lag).To(BeZero())
		Expect(m.CurrentInstances).To(HaveValue(BeZero()))
		Eventually(func() []string { return marked(marker, d.Cmd.Process.Pid) }, 15*time.Second).Should(BeEmpty(), "no instance process left at zero")

		stop(d)
	})

	it("loses no queued event across a restart, and Ctrl-C stops running instances, sidecars and grandchildren", func() {
		d := start("restart.yml")
		Eventually(d.Out, 10*time.Second).Should(gbytes.Say(`keeper \[APP/PROC/WEB/1\] OUT wordcount listening`))
		publishTo(d, 300, "the quick brown fox jumps over the lazy dog", "--service", "words-bus")
		stop(d) // right away: the events are still queued
		first := processed(d)
		Expect(len(first)).To(BeNumerically("<", 300), "some events were still queued at the restart")

		d = start("restart.yml")
		Eventually(func() int {
			all := processed(d)
			for id := range first {
				all[id]++
			}
			return len(all)
		}, 45*time.Second).Should(Equal(300), "every event queued before the restart is delivered after it")
		Expect(d.Output()).To(MatchRegexp(`wordcount \[APP/PROC/WEB/0/hottopic\] `))
		Expect(marked(marker, d.Cmd.Process.Pid)).NotTo(BeEmpty())

		stop(d) // with instances, sidecars and a grandchild running
	})

	it("--cluster runs three node processes; a node killed with SIGKILL is started again and no event is lost", func() {
		d := start("wordcount.yml", "--cluster")
		nodes := regexp.MustCompile(`(n\d) pid (\d+) nats://127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(d.Output(), -1)
		Expect(nodes).To(HaveLen(3), d.Output())
		st, err := state.Read(dataDir)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.NATSURL).To(Equal(fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d", natsPort, natsPort+1, natsPort+2)))

		publish(d, 100)
		pid, _ := strconv.Atoi(nodes[1][2])
		Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
		Eventually(d.Out, 10*time.Second).Should(gbytes.Say(`\[HOTTOPIC/NATS\] node n2 \(pid \d+\) exited \(signal: killed\)`))
		Eventually(d.Out, 10*time.Second).Should(gbytes.Say(`\[HOTTOPIC/NATS\] node n2 started again \(pid \d+\)`))
		publish(d, 100)
		Eventually(func() int { return len(processed(d)) }, 60*time.Second).Should(Equal(200), "every event processed at least once")

		stop(d) // the nodes too: stop checks that no process is left
	})

	it("gives each service its own bus: publish --service reaches only that service's apps, and apps without services share the implicit one", func() {
		d := start("buses.yml")
		Expect(d.Output()).To(ContainSubstring("event buses, each a NATS account made by the broker: bus-a ← alpha; bus-b ← beta; hottopic-dev ← gamma"))
		Expect(d.Output()).To(ContainSubstring("(add `--service NAME` for bus-a, bus-b)"))
		// Each app's events, by the one word each publish carries.
		got := func(app, word string) int {
			return len(regexp.MustCompile(regexp.QuoteMeta(app)+` \[APP/PROC/WEB/\d+\] OUT event \S+ \(delivery \d+\): 1 words, top \[\('`+word+`', 1\)\]`).FindAllString(d.Output(), -1))
		}
		publishTo(d, 5, "for-a", "--service", "bus-a")
		publishTo(d, 3, "for-implicit")
		publishTo(d, 4, "for-b", "--service", "bus-b")
		Eventually(func() []int { return []int{got("alpha", "for-a"), got("gamma", "for-implicit"), got("beta", "for-b")} }, 45*time.Second).
			Should(Equal([]int{5, 3, 4}), "each app gets its own bus's events")
		for _, leak := range [][2]string{{"alpha", "for-b"}, {"alpha", "for-implicit"}, {"beta", "for-a"}, {"beta", "for-implicit"}, {"gamma", "for-a"}, {"gamma", "for-b"}} {
			Expect(got(leak[0], leak[1])).To(BeZero(), "%s got an event of another bus (%s)", leak[0], leak[1])
		}

		// Each app's VCAP_SERVICES names its own service, as Cloud Foundry would.
		st, err := state.Read(dataDir)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Buses).To(HaveLen(3))
		for _, b := range st.Buses {
			Expect(b.Key.Label).To(Equal("hottopic"))
			Expect(b.Key.Tags).To(ContainElements("hottopic", "nats"))
			Expect(b.Topics).To(Equal([]string{"words"}))
		}

		out, err := publishCmd(d, "words", "x", "--service", "nosuch")
		Expect(err).To(HaveOccurred())
		Expect(out).To(Equal("Error: no service \"nosuch\" in the running hottopic dev; its services: bus-a, bus-b, hottopic-dev (implicit)\n"))
		out, err = publishCmd(d, "orders", "x", "--service", "bus-a")
		Expect(err).To(HaveOccurred())
		Expect(out).To(Equal("Error: service bus-a takes the topics and output topics of its apps (words), not orders: map one of its apps to orders in the manifest\n"))

		stop(d)
	})

	it("--nats against a plain nats-server keeps one bus without a broker", func() {
		srvPort := proctest.FreePort(t)
		ns := proctest.Start(t, exec.Command(natsServer(t), "-a", "127.0.0.1", "-p", strconv.Itoa(srvPort), "-js", "-sd", t.TempDir()))
		Eventually(ns.Out, time.Minute).Should(gbytes.Say("Server is ready"))
		url := fmt.Sprintf("nats://127.0.0.1:%d", srvPort)
		d := start("wordcount.yml", "--nats", url)
		Expect(d.Output()).NotTo(ContainSubstring("event buses"))
		st, err := state.Read(dataDir)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.NATSURL).To(Equal(url))
		Expect(st.Buses).To(BeEmpty())

		publish(d, 20)
		Eventually(func() int { return len(processed(d)) }, 45*time.Second).Should(Equal(20))
		out, err := publishCmd(d, "words", "x", "--service", "bus-a")
		Expect(err).To(HaveOccurred())
		Expect(out).To(Equal("Error: the running hottopic dev serves one event bus without a broker (it was started with --nats or --cluster): publish without --service\n"))

		stop(d)
	})

	it("refuses a broken manifest with one line naming the line", func() {
		cmd := exec.Command(bin, "dev", "-f", filepath.Join("testdata", "broken.yml"), "--data-dir", dataDir, "--nats-port", strconv.Itoa(natsPort))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		Expect(err).To(HaveOccurred())
		Expect(cmd.ProcessState.ExitCode()).To(Equal(1))
		Expect(stderr.String()).To(MatchRegexp(`^Error: testdata/broken\.yml: line 6: invalid YAML: [^\n]+\n$`))
		Expect(stdout.String()).To(BeEmpty())
	})
}

// natsServer is the nats-server binary built by scripts/tools.sh.
func natsServer(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../../scripts/tools.sh", "nats-server").Output()
	if err != nil {
		t.Fatalf("scripts/tools.sh nats-server: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func mappingOf(scalerURL, app string) api.Mapping {
	var found api.Mapping
	Eventually(func() error {
		resp, err := http.Get(scalerURL + api.Path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var ms api.Mappings
		if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
			return err
		}
		for _, m := range ms.Mappings {
			if m.AppName == app && m.LagKnown && m.CurrentInstances != nil {
				found = m
				return nil
			}
		}
		return fmt.Errorf("no mapping with known lag for %s yet", app)
	}, 10*time.Second).Should(Succeed())
	return found
}

// marked lists the processes (but except) whose environment carries the
// test's marker: every process hottopic dev started, however deep.
func marked(marker string, except ...int) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || contains(except, pid) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte("DEVTEST_MARKER="+marker)) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && bytes.Contains(stat, []byte(") Z ")) {
			continue // exited, waiting to be reaped
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	return out
}

func killMarked(marker string) {
	for _, p := range marked(marker) {
		pid, _ := strconv.Atoi(strings.Fields(p)[0])
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func contains(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

// withoutNATSEnv drops what would point publish elsewhere than the runtime.
func withoutNATSEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "HOTTOPIC_NATS_URL=") && !strings.HasPrefix(kv, "VCAP_SERVICES=") {
			out = append(out, kv)
		}
	}
	return out
}
