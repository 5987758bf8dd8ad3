//go:build linux

package supervisor_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/dev/console"
	"github.com/hottopic-io/hottopic/dev/supervisor"
	"github.com/hottopic-io/hottopic/scaler"
)

func TestSupervisor(t *testing.T) {
	spec.Run(t, "Supervisor", testSupervisor, spec.Report(report.Terminal{}))
}

func testSupervisor(t *testing.T, when spec.G, it spec.S) {
	var (
		out     *gbytes.Buffer
		dir     string
		ctx     context.Context
		cancel  context.CancelFunc
		ran     chan error
		started bool
	)

	it.Before(func() {
		RegisterTestingT(t)
		out = gbytes.NewBuffer()
		dir = t.TempDir()
		ctx, cancel = context.WithCancel(context.Background())
		ran = make(chan error, 1)
		started = false
	})

	it.After(func() {
		cancel()
		if started {
			Eventually(ran, 20*time.Second).Should(Receive())
		}
	})

	run := func(grace time.Duration, apps ...supervisor.App) *supervisor.Supervisor {
		s, err := supervisor.New(supervisor.Config{
			Console:     console.New(out),
			NATSURL:     "nats://127.0.0.1:4999",
			BaseEnv:     supervisor.BaseEnv(append(os.Environ(), "HOTTOPIC_NATS_URL=nats://elsewhere:1", "VCAP_SERVICES={}")),
			GracePeriod: grace,
		}, apps)
		Expect(err).NotTo(HaveOccurred())
		started = true
		go func() { ran <- s.Run(ctx) }()
		return s
	}

	alive := func(pid int) bool { return syscall.Kill(pid, 0) == nil && !zombie(pid) }

	pidsIn := func(re string) []int {
		var pids []int
		for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(string(out.Contents()), -1) {
			n, _ := strconv.Atoi(m[1])
			pids = append(pids, n)
		}
		return pids
	}

	it("runs instances with CF's environment, scales them and leaves no process behind", func() {
		app := supervisor.App{
			GUID: supervisor.NameUUID("dev/fn"), Name: "fn", Dir: dir,
			Command:   `sleep 300 & echo "child $!"; echo "pid $$ index $CF_INSTANCE_INDEX port $PORT listen $HOTTOPIC_LISTEN nats ${HOTTOPIC_NATS_URL:-none} greeting $GREETING"; echo "$VCAP_SERVICES" > vcap_services_$CF_INSTANCE_INDEX.json; echo "$VCAP_APPLICATION" > vcap_app_$CF_INSTANCE_INDEX.json; exec sleep 300`,
			Env:       map[string]string{"GREETING": "hello"},
			Instances: 1,
			Mapped:    true, Annotations: map[string]string{"hottopic.io/topics": "t"},
		}
		s := run(time.Second, app)
		Eventually(out).Should(gbytes.Say(`fn \[APP/PROC/WEB/0\] OUT pid \d+ index 0 port \d+ listen 127\.0\.0\.1:\d+ nats none greeting hello`))

		apps, err := s.MappedApps(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(apps).To(Equal([]scaler.App{{GUID: app.GUID, Name: "fn", Annotations: map[string]string{"hottopic.io/topics": "t"}}}))
		Expect(s.Instances(ctx, app.GUID)).To(Equal(1))

		Expect(s.Scale(ctx, app.GUID, 3)).To(Succeed())
		Expect(s.Instances(ctx, app.GUID)).To(Equal(3))
		Eventually(func() []int { return pidsIn(`OUT pid (\d+) index`) }).Should(HaveLen(3))
		Expect(string(out.Contents())).To(MatchRegexp(`index 2 port`))
		ports := regexp.MustCompile(`port (\d+)`).FindAllStringSubmatch(string(out.Contents()), -1)
		Expect(map[string]bool{ports[0][1]: true, ports[1][1]: true, ports[2][1]: true}).To(HaveLen(3), "each instance has its own PORT")

		// Each instance writes its own files, vcap_app last: once that one
		// parses, both are complete (a shared file could be caught mid-rewrite
		// by another instance).
		var vcap map[string]any
		Eventually(func() error {
			b, err := os.ReadFile(filepath.Join(dir, "vcap_app_2.json"))
			if err == nil {
				err = json.Unmarshal(b, &vcap)
			}
			return err
		}).Should(Succeed())
		Expect(vcap).To(HaveKeyWithValue("application_id", app.GUID))
		Expect(vcap).To(HaveKeyWithValue("application_name", "fn"))
		Expect(vcap).To(HaveKeyWithValue("instance_index", BeNumerically("==", 2)))
		b, err := os.ReadFile(filepath.Join(dir, "vcap_services_2.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(MatchJSON(`{"hottopic":[{"name":"hottopic-dev","instance_name":"hottopic-dev","label":"hottopic","tags":["hottopic","nats"],"credentials":{"uri":"nats://127.0.0.1:4999"}}]}`))

		Expect(s.Scale(ctx, app.GUID, 1)).To(Succeed())
		Eventually(out).Should(gbytes.Say(`fn \[CELL/2\] Stopped instance 2`))
		Eventually(func() int { return s.Running(app.GUID) }).Should(Equal(1))

		all := append(pidsIn(`OUT pid (\d+) index`), pidsIn(`OUT child (\d+)`)...)
		Expect(all).To(HaveLen(6))
		cancel()
		Eventually(ran, 10*time.Second).Should(Receive(BeNil()))
		ran <- nil
		for _, pid := range all {
			Eventually(func() bool { return alive(pid) }).Should(BeFalse(), "pid %d outlived the supervisor", pid)
		}
		Expect(s.Scale(ctx, app.GUID, 1)).To(MatchError(ContainSubstring("shutting down")))
	})

	it("restarts a crashed instance, as Diego does", func() {
		app := supervisor.App{GUID: "g1", Name: "crashy", Dir: dir, Instances: 1,
			Command: `if [ -e crashed ]; then echo second life; exec sleep 300; fi; touch crashed; echo first life; exit 3`}
		run(time.Second, app)
		Eventually(out).Should(gbytes.Say(`crashy \[APP/PROC/WEB/0\] OUT first life`))
		Eventually(out).Should(gbytes.Say(`crashy \[API/0\] App instance exited: APP/PROC/WEB/0: Exited with status 3 \(CRASHED\)`))
		Eventually(out).Should(gbytes.Say(`crashy \[APP/PROC/WEB/0\] OUT second life`))
	})

	it("stops draining sidecars before the app, and kills what ignores SIGTERM after the grace period", func() {
		app := supervisor.App{GUID: "g2", Name: "fn", Dir: dir, Instances: 1,
			Command: `trap 'echo app got TERM; exit 0' TERM; echo app ready; while true; do sleep 0.05; done`,
			Sidecars: []supervisor.Sidecar{
				{Name: "hottopic", Drains: true, Path: "bash", Args: []string{"-c", `trap 'echo draining; sleep 0.3; echo drained; exit 0' TERM; echo sidecar ready; while true; do sleep 0.05; done`}},
				{Name: "stubborn", Command: `trap '' TERM; echo stubborn pid $$; while true; do sleep 0.05; done`},
			}}
		s := run(500*time.Millisecond, app)
		// Each process says so once its TERM trap is set: all three must have,
		// or a TERM could end one before it can drain or ignore it.
		Eventually(func() string { return string(out.Contents()) }).Should(SatisfyAll(
			ContainSubstring(`fn [APP/PROC/WEB/0] OUT app ready`),
			ContainSubstring(`fn [APP/PROC/WEB/0/hottopic] OUT sidecar ready`),
			MatchRegexp(`fn \[APP/PROC/WEB/0/stubborn\] OUT stubborn pid \d+`)))

		Expect(s.Scale(ctx, "g2", 0)).To(Succeed())
		Eventually(out).Should(gbytes.Say(`fn \[APP/PROC/WEB/0/hottopic\] OUT drained`))
		Eventually(out).Should(gbytes.Say(`fn \[APP/PROC/WEB/0\] OUT app got TERM`))
		Eventually(out, 5*time.Second).Should(gbytes.Say(`Stopped instance 0`))
		Expect(alive(pidsIn(`stubborn pid (\d+)`)[0])).To(BeFalse())
	})

	it("refuses unknown apps and negative counts", func() {
		s := run(time.Second, supervisor.App{GUID: "g3", Name: "fn", Dir: dir, Command: "exec sleep 300", Instances: 0})
		Expect(s.Scale(ctx, "nope", 1)).To(MatchError(ContainSubstring("not in the manifest")))
		Expect(s.Scale(ctx, "g3", -1)).To(HaveOccurred())
		_, err := s.Instances(ctx, "nope")
		Expect(err).To(HaveOccurred())
		apps, err := s.MappedApps(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(apps).To(BeEmpty())
	})

	it("derives stable, UUID-shaped app GUIDs from names", func() {
		Expect(supervisor.NameUUID("dev/a")).To(Equal(supervisor.NameUUID("dev/a")))
		Expect(supervisor.NameUUID("dev/a")).NotTo(Equal(supervisor.NameUUID("dev/b")))
		Expect(supervisor.NameUUID("dev/a")).To(MatchRegexp(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`))
	})
}

// zombie reports whether pid is a zombie (exited, not yet reaped by init).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	m := regexp.MustCompile(`\) (\S) `).FindSubmatch(b)
	return m != nil && string(m[1]) == "Z"
}
