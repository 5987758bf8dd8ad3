package buildpack

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SidecarName is the sidecar's executable name, on PATH at launch.
const SidecarName = "hottopic-sidecar"

// Architectures the package carries a sidecar for.
var Architectures = []string{"amd64", "arm64"}

// SidecarBinary returns the sidecar built for os/arch inside the buildpack
// rooted at root (scripts/build.sh puts it at sidecar/<os>-<arch>/). It fails
// with one line when the platform is not supported or the package lacks the
// binary.
func SidecarBinary(root, goos, arch string) (string, error) {
	arch = normalizeArch(arch)
	if goos != "linux" || !supported(arch) {
		return "", fmt.Errorf("hottopic-sidecar is not available for %s/%s: this buildpack supports linux/amd64 and linux/arm64", goos, arch)
	}
	p := filepath.Join(root, "sidecar", goos+"-"+arch, SidecarName)
	info, err := os.Stat(p)
	if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("the buildpack package has no executable %s for %s/%s at %s: rebuild it with scripts/package.sh", SidecarName, goos, arch, p)
	}
	return p, nil
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

// fileSHA256 identifies a sidecar build, so an unchanged one is reused.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
