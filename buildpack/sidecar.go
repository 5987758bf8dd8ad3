package buildpack

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/buildpacks/libcnb/v2"
	"github.com/paketo-buildpacks/libpak/v2"
	"github.com/paketo-buildpacks/libpak/v2/log"
)

// Sidecar contributes the launch layer holding hottopic-sidecar in its bin/,
// which the launcher puts on PATH, through libpak's dependency support: the
// binary comes from the package's dependency cache (verified against the
// sha256 in buildpack.toml, never downloaded), and the layer gets a Syft SBOM
// (sidecar.sbom.syft.json) describing the dependency. The layer metadata is
// the dependency's id, name, version and checksum plus its architecture, so a
// rebuild with the same sidecar reuses the previous layer.
type Sidecar struct {
	Contributor libpak.DependencyLayerContributor
	Logger      log.Logger
}

// NewSidecar prepares the contribution of dep, built for arch, from cache.
func NewSidecar(dep libpak.BuildModuleDependency, arch string, cache libpak.DependencyCache, logger log.Logger) Sidecar {
	c := libpak.NewDependencyLayerContributor(dep, cache, libcnb.LayerTypes{Launch: true}, logger)
	md := dep.GetMetadata()
	c.ExpectedMetadata = map[string]interface{}{
		"id":       md.ID,
		"name":     md.Name,
		"version":  md.Version,
		"checksum": md.Checksum,
		"arch":     arch,
	}
	return Sidecar{Contributor: c, Logger: logger}
}

// Contribute installs the binary into the layer unless the layer is reused.
func (s Sidecar) Contribute(layer *libcnb.Layer) error {
	return s.Contributor.Contribute(layer, func(layer *libcnb.Layer, artifact *os.File) error {
		dst, err := InstallSidecar(artifact.Name(), filepath.Join(layer.Path, "bin"))
		if err != nil {
			return err
		}
		s.Logger.Bodyf("Installed %s", dst)
		return nil
	})
}

// Name is the layer's name.
func (Sidecar) Name() string { return "sidecar" }

// dependencyCache is libpak's cache of the buildpack's own dependencies/ dir.
func dependencyCache(context libcnb.BuildContext, logger log.Logger) (libpak.DependencyCache, error) {
	info := context.Buildpack.Info
	c, err := libpak.NewDependencyCache(info.ID, info.Version, context.Buildpack.Path, context.Platform.Bindings, logger)
	if err != nil {
		return libpak.DependencyCache{}, fmt.Errorf("dependency cache: %v", oneLine(err))
	}
	return c, nil
}
