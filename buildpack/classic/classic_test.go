package classic_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"
	"gopkg.in/yaml.v3"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/buildpack/classic"
	"github.com/hottopic-io/hottopic/buildpack/internal/bptest"
)

func TestClassic(t *testing.T) {
	spec.Run(t, "Classic", testClassic, spec.Report(report.Terminal{}))
}

func testClassic(t *testing.T, context spec.G, it spec.S) {
	var (
		Expect   = NewWithT(t).Expect
		root     string
		depsDir  string
		env      map[string]string
		out      *bytes.Buffer
		supplier classic.Supplier
	)

	args := func(idx string) []string {
		return []string{t.TempDir(), t.TempDir(), depsDir, idx}
	}

	it.Before(func() {
		root = t.TempDir()
		bptest.Package(t, root, map[string]string{"amd64": "sidecar for amd64", "arm64": "sidecar for arm64"})
		depsDir = t.TempDir()
		env = map[string]string{}
		out = &bytes.Buffer{}
		supplier = classic.Supplier{
			Root:   root,
			Lookup: func(name string) (string, bool) { v, ok := env[name]; return v, ok },
			Out:    out,
			GOOS:   "linux", GOARCH: "arm64",
		}
	})

	readLaunch := func(idx string) classic.Launch {
		raw, err := os.ReadFile(filepath.Join(depsDir, idx, "launch.yml"))
		Expect(err).NotTo(HaveOccurred())
		var l classic.Launch
		Expect(yaml.Unmarshal(raw, &l)).To(Succeed())
		return l
	}

	it("puts the sidecar in deps/<index>/bin and declares it for the web process", func() {
		Expect(supplier.Supply(args("01"))).To(Succeed())

		bin := filepath.Join(depsDir, "01", "bin", "hottopic-sidecar")
		Expect(os.ReadFile(bin)).To(Equal([]byte("sidecar for arm64")))
		info, err := os.Stat(bin)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Mode().Perm()).To(Equal(os.FileMode(0o755)))

		l := readLaunch("01")
		Expect(l.Processes).To(HaveLen(1))
		p := l.Processes[0]
		Expect(p.Type).To(Equal("hottopic"))
		Expect(p.Command).To(Equal(`"${DEPS_DIR:-/home/vcap/deps}/01/bin/hottopic-sidecar"`))
		Expect(p.Limits.Memory).To(Equal(64))
		Expect(p.Platforms.CloudFoundry.SidecarFor).To(Equal([]string{"web"}))

		var cfg struct {
			Name   string                 `yaml:"name"`
			Config map[string]interface{} `yaml:"config"`
		}
		raw, err := os.ReadFile(filepath.Join(depsDir, "01", "config.yml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(yaml.Unmarshal(raw, &cfg)).To(Succeed())
		Expect(cfg.Name).To(Equal("hottopic-buildpack"))
		Expect(cfg.Config).To(HaveKeyWithValue("version", "0.1.0"))

		Expect(out.String()).To(ContainSubstring("-----> hottopic-buildpack 0.1.0"))
		Expect(out.String()).To(ContainSubstring(`Declared sidecar "hottopic" for the web process with 64 MB`))
	})

	it("writes nothing outside deps/<index>", func() {
		a := args("0")
		Expect(supplier.Supply(a)).To(Succeed())
		for _, dir := range a[:2] {
			entries, err := os.ReadDir(dir)
			Expect(err).NotTo(HaveOccurred())
			Expect(entries).To(BeEmpty())
		}
		entries, err := os.ReadDir(depsDir)
		Expect(err).NotTo(HaveOccurred())
		Expect(entries).To(HaveLen(1))
		Expect(entries[0].Name()).To(Equal("0"))
	})

	it("reserves the configured memory", func() {
		env["BP_HOTTOPIC_SIDECAR_MEMORY"] = "128"
		Expect(supplier.Supply(args("0"))).To(Succeed())
		Expect(readLaunch("0").Processes[0].Limits.Memory).To(Equal(128))
	})

	it("supplies nothing but config.yml when the user opted out", func() {
		env["BP_HOTTOPIC_ENABLED"] = "false"
		Expect(supplier.Supply(args("0"))).To(Succeed())
		Expect(filepath.Join(depsDir, "0", "config.yml")).To(BeARegularFile())
		Expect(filepath.Join(depsDir, "0", "launch.yml")).NotTo(BeAnExistingFile())
		Expect(filepath.Join(depsDir, "0", "bin")).NotTo(BeAnExistingFile())
	})

	context("bad input", func() {
		it("refuses a call that is not the lifecycle's", func() {
			Expect(supplier.Supply([]string{"a", "b"})).To(MatchError(ContainSubstring("bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX (got 2 arguments)")))
			Expect(supplier.Supply(args("../x"))).To(MatchError(`DEPS_IDX "../x" is not allowed: it must be the buildpack's index, digits only`))
			Expect(supplier.Supply([]string{"b", "c", filepath.Join(depsDir, "missing"), "0"})).To(MatchError(ContainSubstring("is not a directory")))
		})

		it("fails with one line, leaving nothing behind, when the package lacks the binary", func() {
			Expect(os.Remove(bptest.Binary(root, "arm64", "sidecar for arm64"))).To(Succeed())
			err := supplier.Supply(args("0"))
			Expect(err).To(MatchError(MatchRegexp(`^the buildpack package has no executable hottopic-sidecar for linux/arm64 at \S+: rebuild it with scripts/package.sh$`)))
			Expect(filepath.Join(depsDir, "0")).NotTo(BeAnExistingFile())
		})

		it("fails with one line on an unsupported architecture", func() {
			supplier.GOARCH = "ppc64le"
			Expect(supplier.Supply(args("0"))).To(MatchError("hottopic-sidecar is not available for linux/ppc64le: this buildpack supports linux/amd64 and linux/arm64"))
		})

		it("refuses bad BP_ values, naming the allowed ones", func() {
			env["BP_HOTTOPIC_ENABLED"] = "si"
			Expect(supplier.Supply(args("0"))).To(MatchError(ContainSubstring("use true or false")))
			Expect(filepath.Join(depsDir, "0")).NotTo(BeAnExistingFile())
		})
	})

	context("Main", func() {
		var stdout, stderr *bytes.Buffer
		it.Before(func() { stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{} })

		it("never detects, so auto-detection cannot make it the final buildpack", func() {
			Expect(classic.Main("detect", []string{t.TempDir()}, root, stdout, stderr)).To(Equal(1))
			Expect(stdout.String()).To(BeEmpty())
			Expect(stderr.String()).To(BeEmpty())
		})

		it("refuses to be the final buildpack with one line that says what to do", func() {
			Expect(classic.Main("finalize", args("1"), root, stdout, stderr)).To(Equal(1))
			Expect(stderr.String()).To(Equal("hottopic-buildpack: this is a supply buildpack: name it before the app's language buildpack, e.g. cf push APP -b hottopic-buildpack -b python_buildpack\n"))
		})

		it("reports a failed supply on one line with exit code 1", func() {
			Expect(classic.Main("supply", []string{"only-one"}, root, stdout, stderr)).To(Equal(1))
			Expect(stderr.String()).To(MatchRegexp(`^hottopic-buildpack: usage: bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX \(got 1 arguments\)\n$`))
		})
	})
}
