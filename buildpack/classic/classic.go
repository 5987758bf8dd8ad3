// Package classic is the buildpack in Cloud Foundry's classic (buildpackapplifecycle)
// form: a supply buildpack that puts hottopic-sidecar into deps/<index>/bin and
// declares it as a sidecar of the web process through launch.yml.
package classic

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"

	"github.com/hottopic-io/hottopic/buildpack"
)

// Name is how later buildpacks find this one in deps/<index>/config.yml.
const Name = "hottopic-buildpack"

// SidecarProcess is the sidecar's name on Cloud Foundry; its logs are tagged
// APP/PROC/WEB/SIDECAR/HOTTOPIC.
const SidecarProcess = "hottopic"

// errUsage is returned for a call that is not the lifecycle's.
var errUsage = errors.New("usage")

var depsIndex = regexp.MustCompile(`^[0-9]+$`)

// Supplier runs bin/supply.
type Supplier struct {
	// Root is the unpacked buildpack.
	Root string
	// Lookup reads the staging environment (the app's env vars are there).
	Lookup buildpack.Lookup
	// Out receives the staging log.
	Out io.Writer
	// GOOS and GOARCH select the sidecar build; empty means this machine's.
	GOOS, GOARCH string
}

// Supply implements `bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX`. It
// writes only under DEPS_DIR/DEPS_IDX, as the contract requires.
func (s Supplier) Supply(args []string) error {
	if len(args) < 4 {
		return fmt.Errorf("%w: bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX (got %d arguments)", errUsage, len(args))
	}
	depsDir, idx := args[2], args[3]
	if !depsIndex.MatchString(idx) {
		return fmt.Errorf("DEPS_IDX %q is not allowed: it must be the buildpack's index, digits only", idx)
	}
	if info, err := os.Stat(depsDir); err != nil || !info.IsDir() {
		return fmt.Errorf("DEPS_DIR %s is not a directory", depsDir)
	}

	version, err := Version(s.Root)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.Out, "-----> %s %s\n", Name, version)

	cfg, err := buildpack.ReadConfig(s.Lookup)
	if err != nil {
		return err
	}
	dir := filepath.Join(depsDir, idx)

	if !cfg.Enabled {
		fmt.Fprintf(s.Out, "       %s is false: not adding %s\n", buildpack.EnvEnabled, buildpack.SidecarName)
		return writeConfig(dir, version, false)
	}

	goos, goarch := s.GOOS, s.GOARCH
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	metadata, err := Metadata(s.Root)
	if err != nil {
		return err
	}
	_, src, err := buildpack.BundledSidecar(s.Root, metadata, goos, goarch)
	if err != nil {
		return err
	}
	if _, err := buildpack.InstallSidecar(src, filepath.Join(dir, "bin")); err != nil {
		return err
	}
	fmt.Fprintf(s.Out, "       Installed %s\n", filepath.Join("deps", idx, "bin", buildpack.SidecarName))

	if err := writeLaunch(dir, idx, cfg.SidecarMemoryMB); err != nil {
		return err
	}
	fmt.Fprintf(s.Out, "       Declared sidecar %q for the web process with %d MB (launch.yml); no manifest change needed\n",
		SidecarProcess, cfg.SidecarMemoryMB)
	return writeConfig(dir, version, true)
}

// Launch is the launch.yml schema of buildpackapplifecycle.
type Launch struct {
	Processes []LaunchProcess `yaml:"processes"`
}

// LaunchProcess is one entry; with sidecar_for it becomes a sidecar.
type LaunchProcess struct {
	Type    string `yaml:"type"`
	Command string `yaml:"command"`
	Limits  struct {
		Memory int `yaml:"memory"`
	} `yaml:"limits"`
	Platforms struct {
		CloudFoundry struct {
			SidecarFor []string `yaml:"sidecar_for"`
		} `yaml:"cloudfoundry"`
	} `yaml:"platforms"`
}

// SidecarCommand starts the supplied sidecar. Staging paths are temporary, so
// it names the runtime location: the launcher sets DEPS_DIR=/home/vcap/deps
// for every process and runs the command through bash.
func SidecarCommand(idx string) string {
	return fmt.Sprintf(`"${DEPS_DIR:-/home/vcap/deps}/%s/bin/%s"`, idx, buildpack.SidecarName)
}

func writeLaunch(dir, idx string, memoryMB int) error {
	p := LaunchProcess{Type: SidecarProcess, Command: SidecarCommand(idx)}
	p.Limits.Memory = memoryMB
	p.Platforms.CloudFoundry.SidecarFor = []string{"web"}
	return writeYAML(filepath.Join(dir, "launch.yml"), Launch{Processes: []LaunchProcess{p}})
}

// writeConfig writes deps/<index>/config.yml, which every supply buildpack
// must leave: later buildpacks read it.
func writeConfig(dir, version string, enabled bool) error {
	return writeYAML(filepath.Join(dir, "config.yml"), map[string]interface{}{
		"name": Name,
		"config": map[string]interface{}{
			"version": version,
			"sidecar": enabled,
		},
	})
}

func writeYAML(path string, v interface{}) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	b := buf.Bytes()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Metadata is the [metadata] table of the buildpack's buildpack.toml.
func Metadata(root string) (map[string]interface{}, error) {
	var d struct {
		Metadata map[string]interface{} `toml:"metadata"`
	}
	p := filepath.Join(root, "buildpack.toml")
	if _, err := toml.DecodeFile(p, &d); err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return d.Metadata, nil
}

// Version is the buildpack's version from its buildpack.toml.
func Version(root string) (string, error) {
	var d struct {
		Buildpack struct {
			Version string `toml:"version"`
		} `toml:"buildpack"`
	}
	p := filepath.Join(root, "buildpack.toml")
	if _, err := toml.DecodeFile(p, &d); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	if d.Buildpack.Version == "" {
		return "", fmt.Errorf("%s has no buildpack.version", p)
	}
	return d.Buildpack.Version, nil
}
