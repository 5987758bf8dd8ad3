package buildpack

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/paketo-buildpacks/libpak/v2"
)

// SidecarName is the sidecar's executable name, on PATH at launch.
const SidecarName = "hottopic-sidecar"

// DependencyID is the sidecar's id in buildpack.toml's [[metadata.dependencies]].
const DependencyID = "hottopic-sidecar"

// Architectures the package carries a sidecar for.
var Architectures = []string{"amd64", "arm64"}

// BundledSidecar returns the sidecar dependency that buildpack.toml's
// metadata (of the buildpack rooted at root) declares for goos/arch, and the
// binary the package carries for it where libpak's dependency cache looks:
// dependencies/<sha256>/<file name of its uri>, beside dependencies/<sha256>.toml.
// It fails with one line when the platform is not supported, the package lacks
// the binary or the binary is not the one declared; it never downloads.
func BundledSidecar(root string, metadata map[string]interface{}, goos, arch string) (libpak.BuildModuleDependency, string, error) {
	arch = normalizeArch(arch)
	if goos != "linux" || !supported(arch) {
		return libpak.BuildModuleDependency{}, "", fmt.Errorf("hottopic-sidecar is not available for %s/%s: this buildpack supports linux/amd64 and linux/arm64", goos, arch)
	}
	md, err := libpak.NewBuildModuleMetadata(metadata)
	if err != nil {
		return libpak.BuildModuleDependency{}, "", fmt.Errorf("buildpack.toml: %v", oneLine(err))
	}
	var dep libpak.BuildModuleDependency
	found := false
	for _, d := range md.Dependencies {
		if a, err := d.GetArch(); err == nil && d.ID == DependencyID && a == arch {
			dep, found = d, true
			break
		}
	}
	if !found {
		return libpak.BuildModuleDependency{}, "", fmt.Errorf("buildpack.toml declares no %s dependency for %s/%s: rebuild the package with scripts/package.sh", DependencyID, goos, arch)
	}
	sum := dep.GetChecksum().Hash()
	u, err := url.Parse(dep.URI)
	if err != nil || sum == "" {
		return libpak.BuildModuleDependency{}, "", fmt.Errorf("buildpack.toml: the %s dependency for %s/%s needs a uri and a sha256", DependencyID, goos, arch)
	}
	dir := filepath.Join(root, "dependencies")
	p := filepath.Join(dir, sum, path.Base(u.Path))
	info, err := os.Stat(p)
	if _, terr := os.Stat(filepath.Join(dir, sum+".toml")); err != nil || terr != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		return libpak.BuildModuleDependency{}, "", fmt.Errorf("the buildpack package has no executable %s for %s/%s at %s: rebuild it with scripts/package.sh", SidecarName, goos, arch, p)
	}
	got, err := fileSHA256(p)
	if err != nil {
		return libpak.BuildModuleDependency{}, "", err
	}
	if got != sum {
		return libpak.BuildModuleDependency{}, "", fmt.Errorf("%s has sha256 %s, not the %s that buildpack.toml declares: rebuild the package with scripts/package.sh", p, got, sum)
	}
	return dep, p, nil
}

// normalizeArch accepts uname spellings for the GOARCH names CNB uses.
func normalizeArch(arch string) string {
	switch arch {
	case "x86_64":
		return "amd64"
	case "aarch64":
		return "arm64"
	}
	return arch
}

func supported(arch string) bool {
	for _, a := range Architectures {
		if a == arch {
			return true
		}
	}
	return false
}

// InstallSidecar copies the sidecar binary at src to dir/hottopic-sidecar,
// executable, through a temporary file so a failed copy leaves nothing behind.
func InstallSidecar(src, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()

	dst := filepath.Join(dir, SidecarName)
	tmp, err := os.CreateTemp(dir, "."+SidecarName+"-*")
	if err != nil {
		return "", fmt.Errorf("create %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", fmt.Errorf("chmod %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("install %s: %w", dst, err)
	}
	return dst, nil
}

// fileSHA256 is the hex SHA-256 of a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// oneLine keeps an error (libpak's are multi-line) on one line.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
