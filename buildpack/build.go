package buildpack

import (
	"fmt"
	"runtime"

	"github.com/buildpacks/libcnb/v2"
	"github.com/paketo-buildpacks/libpak/v2/log"
)

// Build contributes the sidecar layer when the plan asks for it.
type Build struct {
	Logger log.Logger
}

// NewBuild returns a Build that logs to logger.
func NewBuild(logger log.Logger) Build { return Build{Logger: logger} }

// Build implements libcnb.BuildFunc. Its errors are one line each, so the
// user sees what is wrong without a stack of wrappers.
func (b Build) Build(context libcnb.BuildContext) (libcnb.BuildResult, error) {
	b.Logger.Title(context.Buildpack.Info.Name, context.Buildpack.Info.Version, context.Buildpack.Info.Homepage)
	result := libcnb.NewBuildResult()

	if !planned(context.Plan) {
		b.Logger.Body("The build plan does not ask for hottopic-sidecar: nothing to do")
		return result, nil
	}

	cr, err := configurationResolver(context.Buildpack.Metadata)
	if err != nil {
		return libcnb.BuildResult{}, err
	}
	cfg, err := ReadConfig(cr.Resolve)
	if err != nil {
		return libcnb.BuildResult{}, err
	}
	cr.LogConfiguration(b.Logger)

	goos, arch := targetPlatform(context.TargetInfo)
	dep, _, err := BundledSidecar(context.Buildpack.Path, context.Buildpack.Metadata, goos, arch)
	if err != nil {
		return libcnb.BuildResult{}, err
	}
	cache, err := dependencyCache(context, b.Logger)
	if err != nil {
		return libcnb.BuildResult{}, err
	}
	sidecar := NewSidecar(dep, normalizeArch(arch), cache, b.Logger)

	layer, err := context.Layers.Layer(sidecar.Name())
	if err != nil {
		return libcnb.BuildResult{}, fmt.Errorf("open layer %s: %w", sidecar.Name(), err)
	}
	if err := sidecar.Contribute(&layer); err != nil {
		return libcnb.BuildResult{}, fmt.Errorf("contribute layer %s: %w", sidecar.Name(), err)
	}
	result.Layers = append(result.Layers, layer)

	b.Logger.Header("Run it beside the app: declare it in the app's manifest.yml (a CNB cannot declare sidecars itself)")
	for _, line := range ManifestSnippet(cfg.SidecarMemoryMB) {
		b.Logger.Body(line)
	}
	return result, nil
}

// ManifestSnippet is the manifest.yml part (under the app) that runs the
// sidecar beside the web process on Cloud Foundry.
func ManifestSnippet(memoryMB int) []string {
	return []string{
		"sidecars:",
		"- name: hottopic",
		"  process_types: [web]",
		"  command: " + SidecarName,
		fmt.Sprintf("  memory: %dM", memoryMB),
	}
}

func planned(plan libcnb.BuildpackPlan) bool {
	for _, e := range plan.Entries {
		if e.Name == PlanEntrySidecar {
			return true
		}
	}
	return false
}

// targetPlatform is the build's target; platforms older than Platform API
// 0.12 do not say, and then the build runs on the target itself.
func targetPlatform(t libcnb.TargetInfo) (goos, arch string) {
	goos, arch = t.OS, t.Arch
	if goos == "" {
		goos = runtime.GOOS
	}
	if arch == "" {
		arch = runtime.GOARCH
	}
	return goos, arch
}
