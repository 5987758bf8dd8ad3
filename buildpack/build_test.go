package buildpack_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/buildpacks/libcnb/v2"
	"github.com/paketo-buildpacks/libpak/v2"
	"github.com/paketo-buildpacks/libpak/v2/log"
	"github.com/sclevine/spec"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/buildpack"
	"github.com/hottopic-io/hottopic/buildpack/internal/bptest"
)

func testBuild(t *testing.T, context spec.G, it spec.S) {
	var (
		Expect = NewWithT(t).Expect
		ctx    libcnb.BuildContext
		out    *bytes.Buffer
		build  buildpack.Build
	)

	it.Before(func() {
		bp := packagedBuildpack(t, "amd64", "arm64")
		ctx = libcnb.BuildContext{
			ApplicationPath: t.TempDir(),
			Buildpack:       bp,
			Layers:          libcnb.Layers{Path: t.TempDir()},
			Plan:            libcnb.BuildpackPlan{Entries: []libcnb.BuildpackPlanEntry{{Name: "hottopic-sidecar"}}},
			TargetInfo:      libcnb.TargetInfo{OS: "linux", Arch: "amd64"},
		}
		out = &bytes.Buffer{}
		build = buildpack.NewBuild(log.NewPaketoLogger(out))
	})

	it("contributes one launch layer with the sidecar in its bin/ and a Syft SBOM of the dependency", func() {
		result, err := build.Build(ctx)
		Expect(err).NotTo(HaveOccurred())

		Expect(result.Layers).To(HaveLen(1))
		layer := result.Layers[0]
		Expect(layer.Name).To(Equal("sidecar"))
		Expect(layer.LayerTypes).To(Equal(libcnb.LayerTypes{Launch: true}))
		Expect(layer.Metadata).To(HaveKeyWithValue("arch", "amd64"))
		Expect(layer.Metadata).To(HaveKeyWithValue("id", "hottopic-sidecar"))
		Expect(layer.Metadata).To(HaveKeyWithValue("version", ctx.Buildpack.Info.Version))
		sum := sha256.Sum256([]byte("sidecar for amd64"))
		Expect(layer.Metadata).To(HaveKeyWithValue("checksum", hex.EncodeToString(sum[:])))

		var sbom struct {
			Artifacts []struct {
				Name, Version, PURL string
				Licenses, CPEs      []string
			}
		}
		raw, err := os.ReadFile(layer.SBOMPath(libcnb.SyftJSON))
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(raw, &sbom)).To(Succeed())
		Expect(sbom.Artifacts).To(HaveLen(1))
		Expect(sbom.Artifacts[0].Name).To(Equal("Hot Topic Sidecar"))
		Expect(sbom.Artifacts[0].PURL).To(Equal("pkg:generic/hottopic-sidecar@" + ctx.Buildpack.Info.Version + "?arch=amd64"))
		Expect(sbom.Artifacts[0].Licenses).To(Equal([]string{"Apache-2.0"}))
		Expect(sbom.Artifacts[0].CPEs).To(HaveLen(1))
		Expect(ctx.Buildpack.Info.SBOMFormats).To(ContainElement(libcnb.SyftJSON.MediaType()))

		bin := filepath.Join(layer.Path, "bin", "hottopic-sidecar")
		Expect(os.ReadFile(bin)).To(Equal([]byte("sidecar for amd64")))
		info, err := os.Stat(bin)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Mode().Perm()).To(Equal(os.FileMode(0o755)))
		Expect(result.Processes).To(BeEmpty())
	})

	it("installs the binary of the build's target architecture", func() {
		ctx.TargetInfo.Arch = "arm64"
		result, err := build.Build(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.ReadFile(filepath.Join(result.Layers[0].Path, "bin", "hottopic-sidecar"))).To(Equal([]byte("sidecar for arm64")))
		Expect(result.Layers[0].Metadata).To(HaveKeyWithValue("arch", "arm64"))
	})

	it("uses this machine's architecture when the platform names no target", func() {
		ctx.TargetInfo = libcnb.TargetInfo{}
		result, err := build.Build(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.ReadFile(filepath.Join(result.Layers[0].Path, "bin", "hottopic-sidecar"))).To(Equal([]byte("sidecar for " + runtime.GOARCH)))
	})

	it("tells the user how to declare the sidecar, with the configured memory", func() {
		t.Setenv("BP_HOTTOPIC_SIDECAR_MEMORY", "96")
		_, err := build.Build(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(plain(out)).To(ContainSubstring("manifest.yml"))
		Expect(plain(out)).To(ContainSubstring(
			"    sidecars:\n" +
				"    - name: hottopic\n" +
				"      process_types: [web]\n" +
				"      command: hottopic-sidecar\n" +
				"      memory: 96M\n"))
	})

	it("contributes nothing when the plan does not ask for the sidecar", func() {
		ctx.Plan = libcnb.BuildpackPlan{}
		result, err := build.Build(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(result.Layers).To(BeEmpty())
	})

	context("run by libcnb as the lifecycle runs it, twice", func() {
		var exits *exitRecorder

		run := func() {
			t.Helper()
			exits = &exitRecorder{}
			libpak.Build(build.Build,
				libcnb.WithArguments([]string{"build"}),
				libcnb.WithExitHandler(exits),
				libcnb.WithLogger(log.NewDiscardLogger()))
			Expect(exits.err).NotTo(HaveOccurred())
		}

		it.Before(func() {
			plan := filepath.Join(t.TempDir(), "plan.toml")
			Expect(os.WriteFile(plan, []byte("[[entries]]\nname = \"hottopic-sidecar\"\n"), 0o644)).To(Succeed())
			t.Setenv("CNB_BUILDPACK_DIR", ctx.Buildpack.Path)
			t.Setenv("CNB_LAYERS_DIR", ctx.Layers.Path)
			t.Setenv("CNB_PLATFORM_DIR", t.TempDir())
			t.Setenv("CNB_BP_PLAN_PATH", plan)
			t.Setenv("CNB_TARGET_OS", "linux")
			t.Setenv("CNB_TARGET_ARCH", "amd64")
		})

		it("writes the layer's TOML and reuses the layer while the sidecar is unchanged", func() {
			run()
			var layer struct {
				Types    libcnb.LayerTypes      `toml:"types"`
				Metadata map[string]interface{} `toml:"metadata"`
			}
			_, err := toml.DecodeFile(filepath.Join(ctx.Layers.Path, "sidecar.toml"), &layer)
			Expect(err).NotTo(HaveOccurred())
			Expect(layer.Types).To(Equal(libcnb.LayerTypes{Launch: true}))
			Expect(layer.Metadata).To(HaveKeyWithValue("arch", "amd64"))

			// The lifecycle restores only the TOML of a launch layer; the image keeps its files.
			Expect(os.RemoveAll(filepath.Join(ctx.Layers.Path, "sidecar"))).To(Succeed())
			out.Reset()
			run()
			Expect(plain(out)).To(ContainSubstring("Reusing cached layer"))
			Expect(filepath.Join(ctx.Layers.Path, "sidecar")).NotTo(BeADirectory())
			Expect(filepath.Join(ctx.Layers.Path, "sidecar.toml")).To(BeARegularFile())

			bptest.Package(t, ctx.Buildpack.Path, map[string]string{"amd64": "a newer sidecar", "arm64": "sidecar for arm64"})
			out.Reset()
			run()
			Expect(plain(out)).NotTo(ContainSubstring("Reusing cached layer"))
			Expect(os.ReadFile(filepath.Join(ctx.Layers.Path, "sidecar", "bin", "hottopic-sidecar"))).To(Equal([]byte("a newer sidecar")))
		})
	})

	context("bad input", func() {
		it("fails with one line for an unsupported architecture", func() {
			ctx.TargetInfo.Arch = "s390x"
			_, err := build.Build(ctx)
			Expect(err).To(MatchError("hottopic-sidecar is not available for linux/s390x: this buildpack supports linux/amd64 and linux/arm64"))
		})

		it("fails with one line when the package lacks the binary", func() {
			Expect(os.Remove(bptest.Binary(ctx.Buildpack.Path, "arm64", "sidecar for arm64"))).To(Succeed())
			ctx.TargetInfo.Arch = "arm64"
			_, err := build.Build(ctx)
			Expect(err).To(MatchError(MatchRegexp(`^the buildpack package has no executable hottopic-sidecar for linux/arm64 at \S+: rebuild it with scripts/package.sh$`)))
			Expect(filepath.Join(ctx.Layers.Path, "sidecar")).NotTo(BeADirectory())
		})

		it("refuses a binary that is not the one buildpack.toml declares", func() {
			Expect(os.WriteFile(bptest.Binary(ctx.Buildpack.Path, "amd64", "sidecar for amd64"), []byte("tampered"), 0o755)).To(Succeed())
			_, err := build.Build(ctx)
			Expect(err).To(MatchError(MatchRegexp(`^\S+ has sha256 [0-9a-f]{64}, not the [0-9a-f]{64} that buildpack.toml declares: rebuild the package with scripts/package.sh$`)))
		})

		it("refuses a bad BP_ value, naming the allowed values", func() {
			t.Setenv("BP_HOTTOPIC_SIDECAR_MEMORY", "huge")
			_, err := build.Build(ctx)
			Expect(err).To(MatchError(ContainSubstring("use a whole number of megabytes from 16 to 1024")))
		})
	})
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// plain is the log without its colours.
func plain(b *bytes.Buffer) string { return ansi.ReplaceAllString(b.String(), "") }

// exitRecorder is libcnb's exit seam: it keeps the outcome instead of exiting.
type exitRecorder struct {
	err            error
	failed, passed bool
}

func (e *exitRecorder) Error(err error) { e.err = err }
func (e *exitRecorder) Fail()           { e.failed = true }
func (e *exitRecorder) Pass()           { e.passed = true }
