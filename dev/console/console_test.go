package console

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"
)

func TestConsole(t *testing.T) {
	spec.Run(t, "Console", testConsole, spec.Report(report.Terminal{}))
}

func testConsole(t *testing.T, when spec.G, it spec.S) {
	var (
		out *bytes.Buffer
		c   *Console
	)

	it.Before(func() {
		RegisterTestingT(t)
		out = &bytes.Buffer{}
		c = New(out)
		c.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 6e6, time.UTC) }
	})

	it("prints each written line once with its source, keeping partial lines until complete", func() {
		w := c.Writer("fn [APP/PROC/WEB/0] OUT")
		_, _ = w.Write([]byte("hel"))
		Expect(out.String()).To(BeEmpty())
		_, _ = w.Write([]byte("lo\r\nsecond\nthi"))
		Expect(w.Close()).To(Succeed())
		Expect(out.String()).To(Equal(
			"03:04:05.006 fn [APP/PROC/WEB/0] OUT hello\n" +
				"03:04:05.006 fn [APP/PROC/WEB/0] OUT second\n" +
				"03:04:05.006 fn [APP/PROC/WEB/0] OUT thi\n"))
	})

	it("splits a line longer than the limit instead of growing forever", func() {
		w := c.Writer("x")
		_, _ = w.Write(bytes.Repeat([]byte("a"), maxLine+10))
		Expect(strings.Count(out.String(), "\n")).To(Equal(1))
	})

	it("prints slog records as message and key=value attributes, dropping debug", func() {
		log := slog.New(c.Handler("[HOTTOPIC/SCALER]", Verbatim("scaled "), Hide("app_guid"))).With("app", "thumbnailer")
		log.Info("scaled thumbnailer 0 → 3: lag 27, 10 per instance", "lag", 27)
		log.Info("mapped app", "app_guid", "x-y", "topics", []string{"a", "b"})
		log.Debug("noise")
		log.WithGroup("nats").Warn("lag unknown", "err", errors.New("timeout reading"), "n", 2)
		Expect(out.String()).To(Equal(
			"03:04:05.006 [HOTTOPIC/SCALER] scaled thumbnailer 0 → 3: lag 27, 10 per instance\n" +
				"03:04:05.006 [HOTTOPIC/SCALER] mapped app app=thumbnailer topics=\"[a b]\"\n" +
				"03:04:05.006 [HOTTOPIC/SCALER] warning: lag unknown app=thumbnailer nats.err=\"timeout reading\" nats.n=2\n"))
	})
}
