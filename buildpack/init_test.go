package buildpack_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/buildpacks/libcnb/v2"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"
)

func TestUnit(t *testing.T) {
	suite := spec.New("buildpack", spec.Report(report.Terminal{}))
	suite("Config", testConfig)
	suite("Detect", testDetect)
	suite("Build", testBuild)
	suite.Run(t)
}

// repoBuildpack is the buildpack.toml at the repository root, so the tests
// run against the descriptor that ships.
func repoBuildpack(t *testing.T) libcnb.Buildpack {
	t.Helper()
	var bp libcnb.Buildpack
	if _, err := toml.DecodeFile(filepath.Join("..", "buildpack.toml"), &bp); err != nil {
		t.Fatalf("read buildpack.toml: %v", err)
	}
	return bp
}

// fakeTree lays out a packaged buildpack at a temp dir: buildpack.toml and a
// sidecar "binary" per architecture whose content names the architecture.
func fakeTree(t *testing.T, archs ...string) string {
	t.Helper()
	root := t.TempDir()
	raw, err := os.ReadFile(filepath.Join("..", "buildpack.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "buildpack.toml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range archs {
		writeSidecar(t, root, a, "sidecar for "+a)
	}
	return root
}

func writeSidecar(t *testing.T, root, arch, content string) {
	t.Helper()
	dir := filepath.Join(root, "sidecar", "linux-"+arch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hottopic-sidecar"), []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
