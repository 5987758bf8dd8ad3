package buildpack

import (
	"fmt"
	"path/filepath"

	"github.com/buildpacks/libcnb/v2"
	"github.com/paketo-buildpacks/libpak/v2"
	"github.com/paketo-buildpacks/libpak/v2/log"
)

// Sidecar contributes the launch layer holding hottopic-sidecar in its bin/,
// which the launcher puts on PATH. Its metadata is the binary's digest and
// architecture, so a rebuild with the same sidecar reuses the previous layer.
type Sidecar struct {
	LayerContributor libpak.LayerContributor
	Logger           log.Logger
	// Source is the sidecar binary inside the buildpack.
	Source string
}

// NewSidecar prepares the contribution of the binary at source, built for arch.
func NewSidecar(source, arch string, logger log.Logger) (Sidecar, error) {
	sum, err := fileSHA256(source)
	if err != nil {
		return Sidecar{}, fmt.Errorf("read %s: %w", source, err)
	}
	expected := map[string]interface{}{
		"name":   SidecarName,
		"arch":   arch,
		"sha256": sum,
	}
	return Sidecar{
		LayerContributor: libpak.NewLayerContributor(SidecarName, expected, libcnb.LayerTypes{Launch: true}, logger),
		Logger:           logger,
		Source:           source,
	}, nil
}

// Contribute copies the binary into the layer unless the layer is reused.
func (s Sidecar) Contribute(layer *libcnb.Layer) error {
	return s.LayerContributor.Contribute(layer, func(layer *libcnb.Layer) error {
		dst, err := InstallSidecar(s.Source, filepath.Join(layer.Path, "bin"))
		if err != nil {
			return err
		}
		s.Logger.Bodyf("Installed %s", dst)
		return nil
	})
}

// Name is the layer's name.
func (Sidecar) Name() string { return "sidecar" }
