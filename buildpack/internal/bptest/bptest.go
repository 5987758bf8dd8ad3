// Package bptest lays out a packaged buildpack for unit tests: the
// repository's buildpack.toml with each sidecar dependency's sha256 stamped,
// and the "binaries" where libpak's dependency cache finds them, as
// scripts/build.sh does for one architecture's root.
package bptest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
)

// RepoTOML is the repository's buildpack.toml, from a package directory two
// levels below the root (buildpack/ or buildpack/classic/ both work).
func RepoTOML(t *testing.T) string {
	t.Helper()
	for _, p := range []string{filepath.Join("..", "buildpack.toml"), filepath.Join("..", "..", "buildpack.toml")} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("no buildpack.toml above the test's directory")
	return ""
}

// Package writes buildpack.toml and, for each arch in sidecars, a sidecar
// "binary" with that content into root. Calling it again replaces them.
func Package(t *testing.T, root string, sidecars map[string]string) {
	t.Helper()
	var d map[string]interface{}
	if _, err := toml.DecodeFile(RepoTOML(t), &d); err != nil {
		t.Fatal(err)
	}
	md := d["metadata"].(map[string]interface{})
	for _, dep := range md["dependencies"].([]map[string]interface{}) {
		content, ok := sidecars[dep["arch"].(string)]
		if !ok {
			continue
		}
		sum := sha256.Sum256([]byte(content))
		hexSum := hex.EncodeToString(sum[:])
		dep["sha256"] = hexSum
		u, err := url.Parse(dep["uri"].(string))
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, "dependencies", hexSum)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path.Base(u.Path)), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "dependencies", hexSum+".toml"), []byte("id = \"hottopic-sidecar\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(d); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "buildpack.toml"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Binary is where Package put the sidecar of content for arch.
func Binary(root, arch, content string) string {
	sum := sha256.Sum256([]byte(content))
	return filepath.Join(root, "dependencies", hex.EncodeToString(sum[:]), "hottopic-sidecar-linux-"+arch)
}
