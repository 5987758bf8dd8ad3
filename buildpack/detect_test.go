package buildpack_test

import (
	"testing"

	"github.com/buildpacks/libcnb/v2"
	"github.com/buildpacks/libcnb/v2/log"
	"github.com/sclevine/spec"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/buildpack"
)

func testDetect(t *testing.T, context spec.G, it spec.S) {
	var (
		Expect = NewWithT(t).Expect
		ctx    libcnb.DetectContext
		detect buildpack.Detect
	)

	it.Before(func() {
		ctx = libcnb.DetectContext{ApplicationPath: t.TempDir(), Buildpack: repoBuildpack(t), Logger: log.NewDiscard()}
	})

	it("passes for any app, providing and requiring the sidecar", func() {
		Expect(detect.Detect(ctx)).To(Equal(libcnb.DetectResult{
			Pass: true,
			Plans: []libcnb.BuildPlan{{
				Provides: []libcnb.BuildPlanProvide{{Name: "hottopic-sidecar"}},
				Requires: []libcnb.BuildPlanRequire{{Name: "hottopic-sidecar"}},
			}},
		}))
	})

	it("passes when explicitly enabled", func() {
		t.Setenv("BP_HOTTOPIC_ENABLED", "true")
		result, err := detect.Detect(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(result.Pass).To(BeTrue())
	})

	it("fails when the user opted out", func() {
		t.Setenv("BP_HOTTOPIC_ENABLED", "false")
		Expect(detect.Detect(ctx)).To(Equal(libcnb.DetectResult{Pass: false}))
	})

	it("errors on a bad switch, naming the allowed values", func() {
		t.Setenv("BP_HOTTOPIC_ENABLED", "nope")
		_, err := detect.Detect(ctx)
		Expect(err).To(MatchError(ContainSubstring("use true or false")))
	})
}
