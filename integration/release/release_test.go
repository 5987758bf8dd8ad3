// Package release_test runs scripts/release.sh once, into a temp dir, and
// checks what a release ships: the six CLI/plugin binaries (for the right OS
// and architecture, version stamped, with SHA-256 files), the cf plugin
// repository entry (platform names and SHA-1 as cf v8 reads them), the
// buildpack packages (multi-arch .cnb, per-arch .cnb, classic zips, with
// LICENSE and NOTICE), and the service sources ready for cf push.
package release_test

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"code.cloudfoundry.org/cli/v8/util/generic"
	"gopkg.in/yaml.v3"

	. "github.com/onsi/gomega"
)

const (
	version = "1.2.3"
	baseURL = "https://downloads.example.invalid/hottopic/v1.2.3"
)

var platforms = []struct{ os, arch, file string }{
	{"linux", "amd64", "hottopic-linux-amd64"},
	{"linux", "arm64", "hottopic-linux-arm64"},
	{"darwin", "amd64", "hottopic-darwin-amd64"},
	{"darwin", "arm64", "hottopic-darwin-arm64"},
	{"windows", "amd64", "hottopic-windows-amd64.exe"},
	{"windows", "arm64", "hottopic-windows-arm64.exe"},
}

func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: cross-builds a whole release")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(repo, "scripts", "release.sh"), "v"+version, out)
	cmd.Env = append(os.Environ(), "HOTTOPIC_RELEASE_URL="+baseURL+"/", "HOTTOPIC_PLUGIN_CREATED=2026-01-15T10:00:00Z")
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, log)
	}

	t.Run("binaries", func(t *testing.T) { testBinaries(t, out) })
	t.Run("repo-index.yml", func(t *testing.T) { testRepoIndex(t, out) })
	t.Run("SHA256SUMS", func(t *testing.T) { testSums(t, out) })
	t.Run("buildpack", func(t *testing.T) { testBuildpack(t, out) })
	t.Run("services", func(t *testing.T) { testServices(t, repo, out) })
	t.Run("cf plugins", func(t *testing.T) { testCFPlugins(t, repo, out) })
}

func testBinaries(t *testing.T, out string) {
	Expect := NewWithT(t).Expect
	for _, p := range platforms {
		file := filepath.Join(out, p.file)
		goos, arch := binaryPlatform(t, file)
		Expect(goos+"/"+arch).To(Equal(p.os+"/"+p.arch), p.file)

		sum, err := readString(file + ".sha256")
		Expect(err).NotTo(HaveOccurred())
		Expect(sum).To(Equal(sha256Hex(t, file) + "  " + p.file + "\n"))
	}

	// The build for this machine runs: the version is stamped.
	if runtime.GOOS == "linux" {
		bin := filepath.Join(out, "hottopic-linux-"+runtime.GOARCH)
		for _, args := range [][]string{{"--version"}, {"version"}} {
			o, err := exec.Command(bin, args...).CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(o))
			Expect(string(o)).To(Equal("hottopic version " + version + "\n"))
		}
	}
}

// binaryPlatform reads the OS and architecture from the executable's header.
func binaryPlatform(t *testing.T, file string) (string, string) {
	t.Helper()
	if f, err := elf.Open(file); err == nil {
		defer f.Close()
		return "linux", map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[f.Machine]
	}
	if f, err := macho.Open(file); err == nil {
		defer f.Close()
		return "darwin", map[macho.Cpu]string{macho.CpuAmd64: "amd64", macho.CpuArm64: "arm64"}[f.Cpu]
	}
	if f, err := pe.Open(file); err == nil {
		defer f.Close()
		return "windows", map[uint16]string{pe.IMAGE_FILE_MACHINE_AMD64: "amd64", pe.IMAGE_FILE_MACHINE_ARM64: "arm64"}[f.Machine]
	}
	t.Fatalf("%s is not an ELF, Mach-O or PE executable", file)
	return "", ""
}

type repoIndex struct {
	Plugins []struct {
		Name, Description, Version, Company, Homepage string
		Created, Updated                              time.Time
		Authors                                       []struct{ Name, Homepage, Contact string }
		Binaries                                      []struct{ Platform, URL, Checksum string }
	}
}

func testRepoIndex(t *testing.T, out string) {
	Expect := NewWithT(t).Expect
	raw, err := os.ReadFile(filepath.Join(out, "repo-index.yml"))
	Expect(err).NotTo(HaveOccurred())
	var idx repoIndex
	Expect(yaml.Unmarshal(raw, &idx)).To(Succeed())
	Expect(idx.Plugins).To(HaveLen(1))
	p := idx.Plugins[0]
	Expect(p.Name).To(Equal("hottopic"))
	Expect(p.Version).To(Equal(version))
	Expect(p.Description).NotTo(BeEmpty())
	Expect(p.Company).NotTo(BeEmpty())
	Expect(p.Homepage).To(HavePrefix("https://"))
	Expect(p.Authors).NotTo(BeEmpty())
	Expect(p.Authors[0].Name).NotTo(BeEmpty())
	Expect(p.Created).To(Equal(time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)))
	Expect(p.Updated.IsZero()).To(BeFalse())

	// cf v8 looks a binary up by generic.GeneratePlatform(GOOS, GOARCH) and
	// compares the download's SHA-1 with checksum.
	want := map[string]string{}
	for _, pl := range platforms {
		if name := generic.GeneratePlatform(pl.os, pl.arch); name != "" {
			if _, taken := want[name]; !taken || pl.arch == "amd64" {
				want[name] = pl.file // osx: the amd64 build, which Apple silicon runs too
			}
		}
	}
	got := map[string]string{}
	for _, b := range p.Binaries {
		Expect(b.URL).To(HavePrefix(baseURL + "/"))
		file := path.Base(b.URL)
		got[b.Platform] = file
		Expect(b.Checksum).To(Equal(sha1Hex(t, filepath.Join(out, file))), b.Platform)
	}
	Expect(got).To(Equal(want))
	Expect(got).To(HaveKeyWithValue("osx", "hottopic-darwin-amd64"))
}

func testSums(t *testing.T, out string) {
	Expect := NewWithT(t).Expect
	cmd := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	cmd.Dir = out
	o, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(o))
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(o)), "\n") {
		listed[strings.TrimSuffix(line, ": OK")] = true
	}
	for _, p := range platforms {
		Expect(listed).To(HaveKey(p.file))
	}
	for _, f := range []string{"repo-index.yml", "hottopic-buildpack-1.2.3.cnb", "hottopic-buildpack-1.2.3.zip",
		"hottopic-buildpack-1.2.3-linux-arm64.zip", "hottopic-buildpack-1.2.3-linux-amd64.cnb",
		"hottopic-buildpack-1.2.3-linux-arm64.cnb", "hottopic-scaler/manifest.yml", "hottopic-scaler/go.mod",
		"hottopic-sidecar-linux-amd64", "hottopic-sidecar-linux-arm64"} {
		Expect(listed).To(HaveKey(f))
	}
}

func testBuildpack(t *testing.T, out string) {
	Expect := NewWithT(t).Expect

	// The multi-arch .cnb: one manifest per architecture, amd64 first, each
	// with that architecture's binaries and the notices.
	layout := untar(t, filepath.Join(out, "hottopic-buildpack-1.2.3.cnb"))
	var index struct {
		Manifests []struct {
			Digest   string
			Platform struct{ OS, Architecture string }
		}
	}
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	var archs []string
	for _, m := range index.Manifests {
		Expect(m.Platform.OS).To(Equal("linux"))
		archs = append(archs, m.Platform.Architecture)
		files := layerFiles(t, layout, m.Digest)
		bp := "cnb/buildpacks/hottopic-io_hottopic-sidecar/1.2.3/"
		for _, f := range []string{"LICENSE", "NOTICE", "README.md", "buildpack.toml", "bin/main"} {
			Expect(files).To(HaveKey(bp+f), m.Platform.Architecture)
		}
		Expect(files[bp+"bin/main"]).To(Equal(m.Platform.Architecture), "bin/main's architecture")
		// The bundled sidecar is the one the release publishes where its uri points.
		published := sha256Hex(t, filepath.Join(out, "hottopic-sidecar-linux-"+m.Platform.Architecture))
		Expect(files).To(HaveKeyWithValue(bp+"dependencies/"+published+"/hottopic-sidecar-linux-"+m.Platform.Architecture, Equal(m.Platform.Architecture)))
	}
	Expect(archs).To(Equal([]string{"amd64", "arm64"}))
	for _, a := range archs {
		Expect(filepath.Join(out, "hottopic-buildpack-1.2.3-linux-"+a+".cnb")).To(BeARegularFile())
	}

	// The classic zips carry the notices and the binaries of their architecture.
	for zipName, arch := range map[string]string{"hottopic-buildpack-1.2.3.zip": "amd64", "hottopic-buildpack-1.2.3-linux-arm64.zip": "arm64"} {
		z, err := zip.OpenReader(filepath.Join(out, zipName))
		Expect(err).NotTo(HaveOccurred())
		names := map[string]bool{}
		for _, f := range z.File {
			names[f.Name] = true
		}
		z.Close()
		for _, f := range []string{"LICENSE", "NOTICE", "README.md", "buildpack.toml", "bin/supply", "bin/main"} {
			Expect(names).To(HaveKey(f), zipName)
		}
		Expect(names).To(HaveKey(MatchRegexp(`^dependencies/[0-9a-f]{64}/hottopic-sidecar-linux-` + arch + `$`)))
	}
}

// layerFiles lists the regular files of a manifest's layers; the value is
// the architecture of an ELF file, else "".
func layerFiles(t *testing.T, layout, digest string) map[string]string {
	t.Helper()
	var manifest struct{ Layers []struct{ Digest string } }
	readJSON(t, blob(layout, digest), &manifest)
	files := map[string]string{}
	for _, l := range manifest.Layers {
		f, err := os.Open(blob(layout, l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			name := strings.TrimPrefix(h.Name, "/")
			files[name] = ""
			tmp := filepath.Join(t.TempDir(), "f")
			w, err := os.Create(tmp)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(w, tr); err != nil {
				t.Fatal(err)
			}
			w.Close()
			if e, err := elf.Open(tmp); err == nil {
				files[name] = map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[e.Machine]
				e.Close()
			}
		}
		f.Close()
	}
	return files
}

func testServices(t *testing.T, repo, out string) {
	Expect := NewWithT(t).Expect
	scaler := filepath.Join(out, "hottopic-scaler")
	raw, err := os.ReadFile(filepath.Join(scaler, "manifest.yml"))
	Expect(err).NotTo(HaveOccurred())
	var m struct {
		Applications []struct {
			Name, Path string
			Env        map[string]string
		}
	}
	Expect(yaml.Unmarshal(raw, &m)).To(Succeed())
	Expect(m.Applications).To(HaveLen(1))
	Expect(m.Applications[0].Name).To(Equal("hottopic-scaler"))
	Expect(m.Applications[0].Path).To(Equal("."))
	Expect(m.Applications[0].Env).To(HaveKeyWithValue("GO_INSTALL_PACKAGE_SPEC", "./cmd/hottopic-scaler"))
	for _, f := range []string{"go.mod", "go.sum", "cmd/hottopic-scaler/main.go", "LICENSE", "NOTICE"} {
		Expect(filepath.Join(scaler, f)).To(BeARegularFile())
	}
	Expect(filepath.Join(scaler, "dist")).NotTo(BeAnExistingFile())
	Expect(filepath.Join(scaler, ".git")).NotTo(BeAnExistingFile())

	// What go_buildpack runs while staging, on the shipped sources alone.
	build := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "hottopic-scaler"), "./cmd/hottopic-scaler")
	build.Dir = scaler
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly")
	o, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(o))

	// The broker is shipped exactly when it exists.
	_, brokerErr := os.Stat(filepath.Join(repo, "cmd", "hottopic-broker"))
	_, shippedErr := os.Stat(filepath.Join(out, "hottopic-broker", "manifest.yml"))
	Expect(shippedErr == nil).To(Equal(brokerErr == nil))
}

// testCFPlugins installs the release's binary into the real cf CLI, which
// reports the stamped version.
func testCFPlugins(t *testing.T, repo, out string) {
	if runtime.GOOS != "linux" {
		t.Skip("runs the linux build")
	}
	Expect := NewWithT(t).Expect
	o, err := exec.Command(filepath.Join(repo, "scripts", "tools.sh"), "cf").Output()
	Expect(err).NotTo(HaveOccurred())
	lines := strings.Split(strings.TrimSpace(string(o)), "\n")
	cf := lines[len(lines)-1]

	home := t.TempDir()
	env := []string{"HOME=" + home, "CF_HOME=" + home, "CF_COLOR=false", "PATH=" + os.Getenv("PATH"), "TMPDIR=" + t.TempDir()}
	run := func(args ...string) string {
		cmd := exec.Command(cf, args...)
		cmd.Env = env
		o, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "cf %s:\n%s", strings.Join(args, " "), o)
		return string(o)
	}
	run("install-plugin", "-f", filepath.Join(out, "hottopic-linux-"+runtime.GOARCH))
	Expect(run("plugins")).To(MatchRegexp(`(?m)^hottopic\s+1\.2\.3\s+map-event`))
}

func untar(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	o, err := exec.Command("tar", "-xf", file, "-C", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("tar -xf %s: %v\n%s", file, err, o)
	}
	return dir
}

func blob(layout, digest string) string {
	return filepath.Join(layout, "blobs", strings.Replace(digest, ":", string(filepath.Separator), 1))
}

func readJSON(t *testing.T, file string, v interface{}) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func readString(file string) (string, error) {
	raw, err := os.ReadFile(file)
	return string(raw), err
}

func sha256Hex(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(raw)
	return hex.EncodeToString(s[:])
}

func sha1Hex(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := sha1.Sum(raw)
	return hex.EncodeToString(s[:])
}
