package buildpack

import (
	"fmt"

	"github.com/buildpacks/libcnb/v2"
	"github.com/paketo-buildpacks/libpak/v2"
)

// PlanEntrySidecar is the build plan entry this buildpack provides and requires.
const PlanEntrySidecar = "hottopic-sidecar"

// Detect passes for every app: the buildpack is chosen explicitly, so being
// in the group is the user's request. BP_HOTTOPIC_ENABLED=false opts out.
type Detect struct{}

// Detect implements libcnb.DetectFunc.
func (Detect) Detect(context libcnb.DetectContext) (libcnb.DetectResult, error) {
	cfg, err := resolveConfig(context.Buildpack.Metadata)
	if err != nil {
		return libcnb.DetectResult{}, err
	}
	if !cfg.Enabled {
		context.Logger.Debugf("%s is false: not adding %s", EnvEnabled, SidecarName)
		return libcnb.DetectResult{Pass: false}, nil
	}
	return libcnb.DetectResult{
		Pass: true,
		Plans: []libcnb.BuildPlan{{
			Provides: []libcnb.BuildPlanProvide{{Name: PlanEntrySidecar}},
			Requires: []libcnb.BuildPlanRequire{{Name: PlanEntrySidecar}},
		}},
	}, nil
}

// resolveConfig reads the configuration the way libpak does (environment,
// else the default from buildpack.toml) and validates it.
func resolveConfig(metadata map[string]interface{}) (Config, error) {
	cr, err := configurationResolver(metadata)
	if err != nil {
		return Config{}, err
	}
	return ReadConfig(cr.Resolve)
}

func configurationResolver(metadata map[string]interface{}) (libpak.ConfigurationResolver, error) {
	md, err := libpak.NewBuildModuleMetadata(metadata)
	if err != nil {
		return libpak.ConfigurationResolver{}, fmt.Errorf("read buildpack metadata: %w", err)
	}
	return libpak.NewConfigurationResolver(md)
}
