//go:build linux

// Package dashboard_test loads the scaler's dashboard under a real `hottopic
// dev` in a real headless Chromium, publishes a burst, and reads from the DOM
// that lag rises, instances follow and both return to zero, with no console
// error. With HOTTOPIC_SCREENSHOTS=DIR it also writes the screenshots the
// docs show (scripts/screenshots.sh).
package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// chromium finds Debian's chromium, installing it with apt-get when missing;
// the test is skipped only where apt-get is not available.
func chromium(t *testing.T) string {
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("chromium is not installed and apt-get is not available to install it")
	}
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "chromium"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found after apt-get install chromium")
	}
	return p
}

// state is what the test reads from the page.
type pageState struct {
	Lag, Current, Desired, Marks int
	Updated                      string
}

const readState = `(() => {
  const r = document.querySelector('tr.app[data-app="wordcount"]');
  if (!r) return null;
  return {Lag: +r.dataset.lag, Current: +r.dataset.current, Desired: +r.dataset.desired,
    Marks: document.querySelectorAll('.card[data-app="wordcount"] .decision-mark').length,
    Updated: document.body.dataset.updated || ""};
})()`

func TestDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: hottopic dev and a browser")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 (the wordcount example) is not installed")
	}
	g := NewWithT(t)
	Expect, Eventually := g.Expect, g.Eventually
	browser := chromium(t)
	bin := proctest.Build(t, "./cmd/hottopic")
	dataDir := filepath.Join(t.TempDir(), "data")

	cmd := exec.Command(bin, "dev", "-f", filepath.Join("..", "dev", "testdata", "wordcount.yml"),
		"--data-dir", dataDir, "--nats-port", strconv.Itoa(proctest.FreePort(t)),
		"--poll-interval", "200ms", "--discovery-interval", "1s")
	dev := proctest.Start(t, cmd)
	Eventually(dev.Out, 30*time.Second).Should(gbytes.Say(`\[HOTTOPIC/DEV\] ready: .*dashboard (http://127\.0\.0\.1:\d+/)`))
	url := regexp.MustCompile(`dashboard (http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(dev.Output())[1]
	t.Cleanup(func() {
		_ = dev.Signal(os.Interrupt)
		<-dev.Done()
	})

	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1280, 900),
	)
	defer cancel()
	var mu sync.Mutex
	var problems []string
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, fmt.Sprintf("console.error: %v", ev.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError {
				problems = append(problems, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}))
	defer cancel()
	_, err := chromedp.Call(ctx, log.Enable, cdp.Empty{})
	Expect(err).NotTo(HaveOccurred())
	Expect(chromedp.Do(ctx, chromedp.Navigate(url))).To(Succeed())

	read := func() pageState {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[*pageState](readState))
		Expect(err).NotTo(HaveOccurred())
		if s == nil {
			return pageState{Lag: -1}
		}
		return *s
	}
	shot := func(name string) {
		dir := os.Getenv("HOTTOPIC_SCREENSHOTS")
		if dir == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(filepath.Join(dir, name), png, 0o644)).To(Succeed())
	}

	idle := func() pageState { s := read(); s.Marks, s.Updated = 0, ""; return s }
	Eventually(idle, 20*time.Second, 100*time.Millisecond).Should(Equal(pageState{}), "the app's row, idle")
	first := read().Updated
	Eventually(func() string { return read().Updated }, 5*time.Second, 100*time.Millisecond).ShouldNot(Equal(first), "the page updates itself")

	out, err := exec.Command(bin, "publish", "words", "the quick brown fox jumps over the lazy dog", "--count", "400", "--data-dir", dataDir).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))

	// On failure, what was published and what the scaler reports.
	why := func(what string) func() string {
		return func() string {
			body := "(no answer)"
			if resp, err := http.Get(url + "v1/mappings"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
			}
			return what + "; publish said: " + string(out) + "; /v1/mappings: " + body
		}
	}
	Eventually(func() int { return read().Lag }, 20*time.Second, 100*time.Millisecond).Should(BeNumerically(">", 0), why("lag rises"))
	Eventually(func() int { return read().Current }, 30*time.Second, 100*time.Millisecond).Should(BeNumerically(">", 0), "instances follow")
	shot("dashboard-burst.png")
	Eventually(idle, 90*time.Second, 200*time.Millisecond).
		Should(Equal(pageState{}), "lag and instances back to zero")
	// Up and down, both marked on the chart.
	Expect(read().Marks).To(BeNumerically(">=", 2))
	lagPath, err := chromedp.Run(ctx, chromedp.AttributeValue(`.card[data-app="wordcount"] path.lag`, "d"))
	Expect(err).NotTo(HaveOccurred())
	Expect(strings.Count(lagPath.Value, "V")).To(BeNumerically(">=", 2), "the lag line went up and came down")
	shot("dashboard-after.png")

	// A dead letter: an invalid CloudEvent that reached the stream by a plain
	// publish is dead-lettered at its first delivery. Its count is a link
	// that lists it.
	st, err := state.Read(dataDir)
	Expect(err).NotTo(HaveOccurred())
	cfg, err := st.OpsNATS("wordcount")
	Expect(err).NotTo(HaveOccurred())
	nc, err := cfenv.Connect(context.Background(), cfg, "dashboard-test")
	Expect(err).NotTo(HaveOccurred())
	defer nc.Close()
	js, err := jetstream.New(nc)
	Expect(err).NotTo(HaveOccurred())
	msg := &nats.Msg{Subject: "words", Header: nats.Header{}, Data: []byte("old style")}
	msg.Header.Set("ce-specversion", "0.3")
	_, err = js.PublishMsg(context.Background(), msg)
	Expect(err).NotTo(HaveOccurred())
	deadLetters := func() string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('tr.app[data-app="wordcount"]') || {dataset: {}}).dataset.deadLetters || ""`))
		Expect(err).NotTo(HaveOccurred())
		return v
	}
	Eventually(deadLetters, 60*time.Second, 200*time.Millisecond).Should(Equal("1"))
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.querySelector('tr.app[data-app="wordcount"] a.dlq').click(), true)`))
	Expect(err).NotTo(HaveOccurred())
	listed := func() string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll('#dlqtable tr.letter')).map(r => r.innerText).join("\n")`))
		Expect(err).NotTo(HaveOccurred())
		return v
	}
	Eventually(listed, 10*time.Second, 100*time.Millisecond).Should(And(ContainSubstring("words"), ContainSubstring("invalid CloudEvent: ce-specversion")))
	shot("dashboard-dead-letters.png")

	mu.Lock()
	defer mu.Unlock()
	Expect(problems).To(BeEmpty(), "no console error")
}
