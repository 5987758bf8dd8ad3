// Package buildpack_test runs the packaged buildpack the way both Cloud Foundry
// lifecycles do: the real CNB lifecycle (detector, builder, launcher) on plain
// directories, and bin/supply with the classic lifecycle's arguments; then the
// sidecar it supplied delivers events from a real NATS server to an app.
package buildpack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"
	"gopkg.in/yaml.v3"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/internal/proctest"
)

const (
	buildpackID = "hottopic-io/hottopic-sidecar"
	topicName   = "orders.created"
	appGUID     = "6f0c3c2e-1d5b-4b8e-9a51-0d3e2c1b7a90"
)

var (
	repo    string // repository root
	work    string // world-traversable scratch dir: the lifecycle runs as uid 1000
	tree    string // this architecture's buildpack root from scripts/build.sh, laid out as the lifecycle wants it
	version string // the buildpack's version
)

func TestBuildpack(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: builds the buildpack and runs the CNB and classic lifecycles")
	}
	var err error
	if repo, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		t.Fatal(err)
	}
	work = worldDir(t, "")
	version = tomlVersion(t, filepath.Join(repo, "buildpack.toml"))
	tree = filepath.Join(work, "buildpacks", strings.ReplaceAll(buildpackID, "/", "_"), version)
	// Only this machine's architecture: cross-compiling is the packaging's job.
	built := filepath.Join(work, "tree")
	runOK(t, exec.Command(filepath.Join(repo, "scripts", "build.sh"), "--arch", runtime.GOARCH, "--out", built))
	// The per-architecture layout: bin/ exists only under linux/<arch>/, and
	// pack puts buildpack.toml beside it; the lifecycle gets the same root.
	if _, err := os.Stat(filepath.Join(built, "bin")); !os.IsNotExist(err) {
		t.Fatalf("scripts/build.sh made a top-level bin/ (%v): the tree must be per architecture", err)
	}
	flatten(t, built, runtime.GOARCH, tree)

	suite := spec.New("Buildpack", spec.Report(report.Terminal{}), spec.Sequential())
	suite("CNB lifecycle", testCNB)
	suite("classic supply", testClassic)
	suite("packaging", testPackaging)
	suite.Run(t)
}

func testCNB(t *testing.T, context spec.G, it spec.S) {
	var (
		g      = NewWithT(t)
		Expect = g.Expect
		lc     lifecycle
	)

	it.Before(func() {
		lc = newLifecycle(t, filepath.Dir(filepath.Dir(tree)))
	})

	it("detects, builds a launch layer on PATH, and the launched sidecar delivers events to the app", func() {
		runOK(t, goBuild(filepath.Join(lc.app, "fnapp"), "./integration/buildpack/testdata/app"))
		lc.chownApp(t)

		out, code := lc.detect(t)
		Expect(code).To(Equal(0), out)
		Expect(os.ReadFile(filepath.Join(lc.layers, "group.toml"))).To(ContainSubstring(buildpackID))

		out, code = lc.build(t)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("Contributing to layer"))
		Expect(out).To(ContainSubstring("manifest.yml"))
		Expect(out).To(ContainSubstring("    - name: hottopic\n      process_types: [web]\n      command: hottopic-sidecar\n      memory: 64M"))

		bpLayers := filepath.Join(lc.layers, strings.ReplaceAll(buildpackID, "/", "_"))
		var layer struct {
			Types    map[string]bool        `toml:"types"`
			Metadata map[string]interface{} `toml:"metadata"`
		}
		_, err := toml.DecodeFile(filepath.Join(bpLayers, "sidecar.toml"), &layer)
		Expect(err).NotTo(HaveOccurred())
		Expect(layer.Types).To(HaveKeyWithValue("launch", true))
		Expect(layer.Types).NotTo(HaveKeyWithValue("cache", true))
		Expect(layer.Metadata).To(HaveKeyWithValue("arch", runtime.GOARCH))
		Expect(layer.Metadata).To(HaveKeyWithValue("id", "hottopic-sidecar"))
		Expect(layer.Metadata).To(HaveKeyWithValue("version", version))
		installed := filepath.Join(bpLayers, "sidecar", "bin", "hottopic-sidecar")
		Expect(installed).To(BeARegularFile())

		// The dependency buildpack.toml declares is the binary that was installed.
		dep := sidecarDependency(t, tree, runtime.GOARCH)
		Expect(layer.Metadata).To(HaveKeyWithValue("checksum", dep.SHA256))
		Expect(fileSHA256(t, installed)).To(Equal(dep.SHA256))

		// The lifecycle accepted the layer's SBOM (it checks sbom-formats) and
		// moved it where the exporter puts it in the image.
		expectSBOM(t, filepath.Join(lc.layers, "sbom", "launch", strings.ReplaceAll(buildpackID, "/", "_"), "sidecar", "sbom.syft.json"), dep)

		// A rebuild with the same sidecar keeps the layer.
		out, code = lc.build(t)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("Reusing cached layer"))

		// Launch both like CF's CNB launcher does; the sidecar by its PATH name.
		nats := natstest.Run(t)
		appPort := freePort(t)
		app := start(t, lc.launch(filepath.Join(lc.app, "fnapp")), "PORT="+appPort)
		sidecar := start(t, lc.launch("hottopic-sidecar"), sidecarEnv(t, nats.URL(), appPort)...)

		publish(t, nats, []byte("hello from the CNB lifecycle"))
		g.Eventually(app.Output, 30*time.Second, 100*time.Millisecond).Should(
			ContainSubstring(`"body":"hello from the CNB lifecycle"`), func() string { return "sidecar:\n" + sidecar.Output() })
		Expect(app.Output()).To(ContainSubstring(`"ce-source":"hottopic:` + topicName + `"`))
		Expect(app.Output()).To(ContainSubstring(`"hottopic-topic":"` + topicName + `"`))
	})

	it("does not take part when the user opts out", func() {
		lc.platformEnv(t, "BP_HOTTOPIC_ENABLED", "false")
		out, code := lc.detect(t)
		Expect(code).To(Equal(20), out) // no group passed
	})

	it("refuses a bad BP_ value with the allowed values", func() {
		lc.platformEnv(t, "BP_HOTTOPIC_ENABLED", "sometimes")
		out, code := lc.detect(t)
		Expect(code).To(Equal(21), out) // a buildpack errored
		Expect(out).To(ContainSubstring(`BP_HOTTOPIC_ENABLED="sometimes" is not allowed: use true or false`))
	})
}

func testClassic(t *testing.T, context spec.G, it spec.S) {
	g := NewWithT(t)
	Expect := g.Expect

	it("supplies the sidecar and launch.yml, and the declared command delivers events", func() {
		expectPerArchRoot(t, tree, runtime.GOARCH)

		// Never auto-detected: only named with -b (which skips detect).
		_, code := run(t, exec.Command(filepath.Join(tree, "bin", "detect"), worldDir(t, "build-")))
		Expect(code).To(Equal(1))

		deps := worldDir(t, "deps-")
		runOK(t, exec.Command(filepath.Join(tree, "bin", "supply"), worldDir(t, "build-"), worldDir(t, "cache-"), deps, "0"))
		expectSupplied(t, deps, "0")

		raw, err := os.ReadFile(filepath.Join(deps, "0", "launch.yml"))
		Expect(err).NotTo(HaveOccurred())
		var launch struct {
			Processes []struct {
				Type    string `yaml:"type"`
				Command string `yaml:"command"`
			} `yaml:"processes"`
		}
		Expect(yaml.Unmarshal(raw, &launch)).To(Succeed())

		// An app in this test process; the sidecar started as CF's launcher
		// starts it: bash -c COMMAND with DEPS_DIR set.
		events := make(chan *http.Request, 10)
		bodies := make(chan string, 10)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			events <- r
			bodies <- string(b)
			w.WriteHeader(http.StatusOK)
		}))
		t.Cleanup(srv.Close)
		_, appPort, _ := net.SplitHostPort(srv.Listener.Addr().String())

		nats := natstest.Run(t)
		cmd := exec.Command("bash", "-c", launch.Processes[0].Command)
		sidecar := start(t, cmd, append(sidecarEnv(t, nats.URL(), appPort), "DEPS_DIR="+deps)...)

		publish(t, nats, []byte("hello from the classic lifecycle"))
		var r *http.Request
		g.Eventually(events, 30*time.Second).Should(Receive(&r), func() string { return "sidecar:\n" + sidecar.Output() })
		Expect(<-bodies).To(Equal("hello from the classic lifecycle"))
		Expect(r.Header.Get("Ce-Specversion")).To(Equal("1.0"))
		Expect(r.Header.Get("Hottopic-Topic")).To(Equal(topicName))
	})

	it("fails with one line when the package lacks the sidecar binary", func() {
		broken := filepath.Join(worldDir(t, "broken-"), "bp")
		runOK(t, exec.Command("cp", "-a", tree, broken))
		Expect(os.RemoveAll(filepath.Join(broken, "dependencies"))).To(Succeed())

		deps := worldDir(t, "deps-")
		out, code := run(t, exec.Command(filepath.Join(broken, "bin", "supply"), worldDir(t, "b-"), worldDir(t, "c-"), deps, "0"))
		Expect(code).To(Equal(1))
		Expect(out).To(MatchRegexp(`(?m)^hottopic-buildpack: supply failed: the buildpack package has no executable hottopic-sidecar for linux/\w+ at \S+: rebuild it with scripts/package.sh$`))
		Expect(filepath.Join(deps, "0")).NotTo(BeAnExistingFile())
	})
}

func testPackaging(t *testing.T, context spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	it("makes per-architecture .cnb files, a multi-arch .cnb the lifecycle runs and a classic .zip, all stamped with the version", func() {
		out := worldDir(t, "pkg-")
		pkgOut := runOK(t, exec.Command(filepath.Join(repo, "scripts", "package.sh"), "--version", "1.2.3", "--arch", runtime.GOARCH, "--out", out))
		Expect(pkgOut).To(MatchRegexp(`package.sh: (using the installed pack|using pack from \$PACK|no pack on PATH: using scripts/tools.sh pack)`))

		perArch := filepath.Join(out, "hottopic-buildpack-1.2.3-linux-"+runtime.GOARCH+".cnb")
		Expect(perArch).To(BeARegularFile())
		cnb := filepath.Join(out, "hottopic-buildpack-1.2.3.cnb")
		Expect(ociPlatforms(t, cnb)).To(Equal([]string{"linux/" + runtime.GOARCH}))
		bps := filepath.Join(worldDir(t, "cnb-"), "buildpacks")
		root := extractBuildpackage(t, cnb, runtime.GOARCH, bps)
		bp := filepath.Join(root, "hottopic-io_hottopic-sidecar", "1.2.3")
		Expect(bp).To(BeADirectory())
		Expect(tomlVersion(t, filepath.Join(bp, "buildpack.toml"))).To(Equal("1.2.3"))
		expectPerArchRoot(t, bp, runtime.GOARCH)
		for _, f := range []string{"LICENSE", "NOTICE", "README.md"} {
			Expect(filepath.Join(bp, f)).To(BeARegularFile())
		}
		dep := sidecarDependency(t, bp, runtime.GOARCH)
		Expect(dep.Version).To(Equal("1.2.3"))
		Expect(dep.PURL).To(Equal("pkg:generic/hottopic-sidecar@1.2.3?arch=" + runtime.GOARCH))
		Expect(dep.CPEs).To(Equal([]string{"cpe:2.3:a:hottopic-io:hottopic-sidecar:1.2.3:*:*:*:*:*:*:*"}))
		Expect(dep.Stacks).To(Equal([]string{"*"}))
		Expect(dep.Licenses).To(HaveLen(1))
		Expect(dep.Licenses[0].Type).To(Equal("Apache-2.0"))

		// The lifecycle runs the buildpack straight from the package.
		lc := newLifecycle(t, root)
		lc.version = "1.2.3"
		lc.chownApp(t)
		o, code := lc.detect(t)
		Expect(code).To(Equal(0), o)
		o, code = lc.build(t)
		Expect(code).To(Equal(0), o)
		Expect(filepath.Join(lc.layers, "hottopic-io_hottopic-sidecar", "sidecar", "bin", "hottopic-sidecar")).To(BeARegularFile())
		expectSBOM(t, filepath.Join(lc.layers, "sbom", "launch", "hottopic-io_hottopic-sidecar", "sidecar", "sbom.syft.json"), dep)

		// The classic lifecycle unzips the .zip and runs bin/supply.
		zipName := "hottopic-buildpack-1.2.3.zip"
		if runtime.GOARCH != "amd64" {
			zipName = "hottopic-buildpack-1.2.3-linux-" + runtime.GOARCH + ".zip"
		}
		unzipped := filepath.Join(worldDir(t, "zip-"), "bp")
		runOK(t, exec.Command("unzip", "-q", filepath.Join(out, zipName), "-d", unzipped))
		for _, f := range []string{"LICENSE", "NOTICE", "README.md", "buildpack.toml"} {
			Expect(filepath.Join(unzipped, f)).To(BeARegularFile())
		}
		deps := worldDir(t, "deps-")
		o, code = run(t, exec.Command(filepath.Join(unzipped, "bin", "supply"), worldDir(t, "b-"), worldDir(t, "c-"), deps, "00"))
		Expect(code).To(Equal(0), o)
		Expect(o).To(ContainSubstring("hottopic-buildpack 1.2.3"))
		expectSupplied(t, deps, "00")
	})
}

// expectSupplied checks what bin/supply leaves in deps/<idx>.
func expectSupplied(t *testing.T, deps, idx string) {
	Expect := NewWithT(t).Expect
	bin := filepath.Join(deps, idx, "bin", "hottopic-sidecar")
	info, err := os.Stat(bin)
	Expect(err).NotTo(HaveOccurred())
	Expect(info.Mode().Perm() & 0o111).NotTo(BeZero())
	Expect(filepath.Join(deps, idx, "config.yml")).To(BeARegularFile())

	raw, err := os.ReadFile(filepath.Join(deps, idx, "launch.yml"))
	Expect(err).NotTo(HaveOccurred())
	var launch map[string]interface{}
	Expect(yaml.Unmarshal(raw, &launch)).To(Succeed())
	Expect(launch).To(Equal(map[string]interface{}{
		"processes": []interface{}{map[string]interface{}{
			"type":      "hottopic",
			"command":   `"${DEPS_DIR:-/home/vcap/deps}/` + idx + `/bin/hottopic-sidecar"`,
			"limits":    map[string]interface{}{"memory": 64},
			"platforms": map[string]interface{}{"cloudfoundry": map[string]interface{}{"sidecar_for": []interface{}{"web"}}},
		}},
	}))
}

// sidecarEnv is the static-mode configuration of the sidecar.
func sidecarEnv(t *testing.T, natsURL, appPort string) []string {
	return []string{
		"PORT=" + appPort,
		"HOTTOPIC_NATS_URL=" + natsURL,
		"HOTTOPIC_TOPICS=" + topicName,
		"HOTTOPIC_LISTEN=127.0.0.1:" + freePort(t),
		`VCAP_APPLICATION={"application_id":"` + appGUID + `","application_name":"fn","instance_index":0}`,
	}
}

// publish stores one event once the sidecar has created the topic's stream.
func publish(t *testing.T, nats *natstest.Server, data []byte) {
	t.Helper()
	nc := nats.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.Publish(ctx, topicName, data)
		return err
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
}

// lifecycle runs the CNB lifecycle's phases on plain directories.
type lifecycle struct {
	bin                               string // dir with detector, builder, launcher
	buildpacks, app, layers, platform string
	version                           string
}

func newLifecycle(t *testing.T, buildpacks string) lifecycle {
	t.Helper()
	dir := worldDir(t, "lc-")
	lc := lifecycle{
		bin:        filepath.Join(dir, "bin"),
		buildpacks: buildpacks,
		app:        filepath.Join(dir, "app"),
		layers:     filepath.Join(dir, "layers"),
		platform:   filepath.Join(dir, "platform"),
		version:    version,
	}
	for _, d := range []string{lc.bin, lc.app, lc.layers, filepath.Join(lc.platform, "env")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Copies, so uid 1000 can run them wherever the tool cache lives.
	copyExecutable(t, tool(t, "lifecycle"), filepath.Join(lc.bin, "lifecycle"))
	copyExecutable(t, tool(t, "launcher"), filepath.Join(lc.bin, "launcher"))
	for _, phase := range []string{"detector", "builder"} {
		if err := os.Symlink("lifecycle", filepath.Join(lc.bin, phase)); err != nil {
			t.Fatal(err)
		}
	}
	return lc
}

func (lc lifecycle) chownApp(t *testing.T) {
	t.Helper()
	for _, d := range []string{lc.app, lc.layers} {
		if os.Geteuid() == 0 {
			runOK(t, exec.Command("chown", "-R", "1000:1000", d))
		}
	}
}

func (lc lifecycle) platformEnv(t *testing.T, name, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(lc.platform, "env", name), []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (lc lifecycle) detect(t *testing.T) (string, int) {
	order := filepath.Join(filepath.Dir(lc.layers), "order.toml")
	body := fmt.Sprintf("[[order]]\n[[order.group]]\nid = %q\nversion = %q\n", buildpackID, lc.version)
	if err := os.WriteFile(order, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	lc.chownApp(t)
	return run(t, lc.phase("detector", "-order", order))
}

func (lc lifecycle) build(t *testing.T) (string, int) {
	return run(t, lc.phase("builder"))
}

func (lc lifecycle) phase(name string, extra ...string) *exec.Cmd {
	args := append([]string{"-no-color", "-app", lc.app, "-layers", lc.layers, "-buildpacks", lc.buildpacks,
		"-platform", lc.platform, "-group", filepath.Join(lc.layers, "group.toml"), "-plan", filepath.Join(lc.layers, "plan.toml")}, extra...)
	cmd := exec.Command(filepath.Join(lc.bin, name), args...)
	cmd.Dir = lc.app
	cmd.Env = append(os.Environ(), "CNB_PLATFORM_API=0.13")
	if os.Geteuid() == 0 { // detector and builder refuse to run as root
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	}
	return cmd
}

// launch runs command in the launch environment of the built layers, with a
// bare PATH so the sidecar can only come from its layer.
func (lc lifecycle) launch(command string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(lc.bin, "launcher"), command)
	cmd.Dir = lc.app
	cmd.Env = []string{"PATH=/usr/bin:/bin", "CNB_PLATFORM_API=0.13", "CNB_LAYERS_DIR=" + lc.layers, "CNB_APP_DIR=" + lc.app}
	return cmd
}

// extractBuildpackage unpacks the buildpack layers for arch of an OCI-layout
// .cnb into dest and returns dest, which then holds <id>/<version>/ like
// /cnb/buildpacks.
func extractBuildpackage(t *testing.T, cnb, arch, dest string) string {
	t.Helper()
	layout := ociLayout(t, cnb)
	var manifest struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	readJSON(t, blob(layout, manifestFor(t, layout, arch)), &manifest)
	unpacked := worldDir(t, "rootfs-")
	for _, l := range manifest.Layers {
		runOK(t, exec.Command("tar", "-xzf", blob(layout, l.Digest), "-C", unpacked))
	}
	if err := os.Rename(filepath.Join(unpacked, "cnb", "buildpacks"), dest); err != nil {
		t.Fatalf("the .cnb has no cnb/buildpacks: %v", err)
	}
	return dest
}

type ociIndex struct {
	Manifests []struct {
		Digest   string
		Platform struct{ OS, Architecture string }
	} `json:"manifests"`
}

func ociLayout(t *testing.T, cnb string) string {
	t.Helper()
	layout := worldDir(t, "oci-")
	runOK(t, exec.Command("tar", "-xf", cnb, "-C", layout))
	return layout
}

// ociPlatforms lists the platforms of a .cnb's index, in order.
func ociPlatforms(t *testing.T, cnb string) []string {
	t.Helper()
	var index ociIndex
	readJSON(t, filepath.Join(ociLayout(t, cnb), "index.json"), &index)
	var out []string
	for _, m := range index.Manifests {
		out = append(out, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	return out
}

// manifestFor is the digest of arch's manifest, checked against its config.
func manifestFor(t *testing.T, layout, arch string) string {
	t.Helper()
	var index ociIndex
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	for _, m := range index.Manifests {
		if m.Platform.OS != "linux" || m.Platform.Architecture != arch {
			continue
		}
		var manifest struct{ Config struct{ Digest string } }
		readJSON(t, blob(layout, m.Digest), &manifest)
		var config struct{ OS, Architecture string }
		readJSON(t, blob(layout, manifest.Config.Digest), &config)
		if config.OS != "linux" || config.Architecture != arch {
			t.Fatalf("index.json says linux/%s for %s, its config says %s/%s", arch, m.Digest, config.OS, config.Architecture)
		}
		return m.Digest
	}
	t.Fatalf("index.json has no manifest for linux/%s", arch)
	return ""
}

// flatten makes dest the buildpack root pack packages for linux/arch:
// buildpack.toml beside the contents of linux/arch/.
func flatten(t *testing.T, built, arch, dest string) {
	t.Helper()
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	runOK(t, exec.Command("cp", "-a", filepath.Join(built, "linux", arch)+"/.", dest))
	runOK(t, exec.Command("cp", "-a", filepath.Join(built, "buildpack.toml"), dest))
}

// expectPerArchRoot checks one architecture's buildpack root: bin/main is a
// Go binary for arch (no script picks one), the lifecycle's names link to it.
func expectPerArchRoot(t *testing.T, root, arch string) {
	t.Helper()
	Expect := NewWithT(t).Expect
	f, err := elf.Open(filepath.Join(root, "bin", "main"))
	Expect(err).NotTo(HaveOccurred(), "bin/main must be an ELF binary")
	defer f.Close()
	Expect(f.Machine).To(Equal(map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]))
	for _, link := range []string{"detect", "build", "supply", "finalize"} {
		Expect(os.Readlink(filepath.Join(root, "bin", link))).To(Equal("main"))
	}
}

// dependency is one [[metadata.dependencies]] entry of buildpack.toml.
type dependency struct {
	ID, Name, Version, URI, SHA256, PURL, Arch string
	CPEs                                       []string
	Stacks                                     []string
	Licenses                                   []struct{ Type, URI string }
}

// sidecarDependency is the sidecar entry for arch in root's buildpack.toml;
// the binary must be in the package where libpak's cache finds it.
func sidecarDependency(t *testing.T, root, arch string) dependency {
	t.Helper()
	var d struct {
		Buildpack struct {
			SBOMFormats []string `toml:"sbom-formats"`
		} `toml:"buildpack"`
		Metadata struct {
			Dependencies []dependency `toml:"dependencies"`
		} `toml:"metadata"`
	}
	if _, err := toml.DecodeFile(filepath.Join(root, "buildpack.toml"), &d); err != nil {
		t.Fatal(err)
	}
	Expect := NewWithT(t).Expect
	Expect(d.Buildpack.SBOMFormats).To(ContainElement("application/vnd.syft+json"))
	for _, dep := range d.Metadata.Dependencies {
		if dep.ID == "hottopic-sidecar" && dep.Arch == arch {
			Expect(dep.SHA256).To(MatchRegexp(`^[0-9a-f]{64}$`))
			bin := filepath.Join(root, "dependencies", dep.SHA256, path.Base(dep.URI))
			Expect(fileSHA256(t, bin)).To(Equal(dep.SHA256))
			Expect(filepath.Join(root, "dependencies", dep.SHA256+".toml")).To(BeARegularFile())
			return dep
		}
	}
	t.Fatalf("%s/buildpack.toml declares no hottopic-sidecar for %s", root, arch)
	return dependency{}
}

// expectSBOM checks the Syft SBOM of the sidecar layer against the dependency.
func expectSBOM(t *testing.T, file string, dep dependency) {
	t.Helper()
	Expect := NewWithT(t).Expect
	var sbom struct {
		Artifacts []struct {
			Name, Version, PURL string
			Licenses, CPEs      []string
		}
	}
	readJSON(t, file, &sbom)
	Expect(sbom.Artifacts).To(HaveLen(1))
	a := sbom.Artifacts[0]
	Expect(a.Name).To(Equal(dep.Name))
	Expect(a.Version).To(Equal(dep.Version))
	Expect(a.PURL).To(Equal(dep.PURL))
	Expect(a.CPEs).To(Equal(dep.CPEs))
	Expect(a.Licenses).To(Equal([]string{"Apache-2.0"}))
}

func fileSHA256(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

func blob(layout, digest string) string {
	return filepath.Join(layout, "blobs", strings.Replace(digest, ":", string(filepath.Separator), 1))
}

// start starts cmd with env added to its environment (this process's if unset).
func start(t *testing.T, cmd *exec.Cmd, env ...string) *proctest.Proc {
	t.Helper()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, env...)
	return proctest.Start(t, cmd)
}

// run runs cmd to completion and returns its combined output without colours
// and its exit code.
func run(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := ansi.ReplaceAllString(out.String(), "")
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return text, ee.ExitCode()
		}
		t.Fatalf("run %s: %v", cmd.Path, err)
	}
	return text, 0
}

func runOK(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, code := run(t, cmd)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", cmd.Path, strings.Join(cmd.Args[1:], " "), code, out)
	}
	return out
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

func goBuild(out, pkg string) *exec.Cmd {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd
}

// tool builds (once, cached) a third-party tool with scripts/tools.sh.
func tool(t *testing.T, name string) string {
	t.Helper()
	out := runOK(t, exec.Command(filepath.Join(repo, "scripts", "tools.sh"), name))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// worldDir makes a temp dir that uid 1000 can traverse, removed after the test.
func worldDir(t *testing.T, prefix string) string {
	t.Helper()
	parent := work
	if prefix == "" {
		parent = ""
		prefix = "hottopic-buildpack-"
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, raw, 0o755); err != nil {
		t.Fatal(err)
	}
}

func tomlVersion(t *testing.T, path string) string {
	t.Helper()
	var d struct {
		Buildpack struct{ Version string } `toml:"buildpack"`
	}
	if _, err := toml.DecodeFile(path, &d); err != nil {
		t.Fatal(err)
	}
	return d.Buildpack.Version
}

func readJSON(t *testing.T, path string, v interface{}) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// freePort picks a free loopback port.
func freePort(t *testing.T) string { return strconv.Itoa(proctest.FreePort(t)) }
