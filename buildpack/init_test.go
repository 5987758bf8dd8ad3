package buildpack_test

import (
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/buildpacks/libcnb/v2"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/buildpack/internal/bptest"
)

func TestUnit(t *testing.T) {
	suite := spec.New("buildpack", spec.Report(report.Terminal{}))
	suite("Config", testConfig)
	suite("Detect", testDetect)
	suite("Build", testBuild)
	suite.Run(t)
}

// packagedBuildpack lays out a packaged buildpack at a temp dir, with a
// sidecar "binary" per architecture whose content names the architecture,
// and returns its descriptor (the repository's buildpack.toml, stamped).
func packagedBuildpack(t *testing.T, archs ...string) libcnb.Buildpack {
	t.Helper()
	root := t.TempDir()
	sidecars := map[string]string{}
	for _, a := range archs {
		sidecars[a] = "sidecar for " + a
	}
	bptest.Package(t, root, sidecars)
	return readBuildpack(t, root)
}

func readBuildpack(t *testing.T, root string) libcnb.Buildpack {
	t.Helper()
	var bp libcnb.Buildpack
	if _, err := toml.DecodeFile(filepath.Join(root, "buildpack.toml"), &bp); err != nil {
		t.Fatalf("read buildpack.toml: %v", err)
	}
	bp.Path = root
	return bp
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
