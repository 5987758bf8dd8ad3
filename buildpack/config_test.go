package buildpack_test

import (
	"testing"

	"github.com/paketo-buildpacks/libpak/v2"
	"github.com/sclevine/spec"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/buildpack"
)

func testConfig(t *testing.T, context spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	env := func(kv map[string]string) buildpack.Lookup {
		return func(name string) (string, bool) { v, ok := kv[name]; return v, ok }
	}

	it("defaults to enabled with 64 MB", func() {
		c, err := buildpack.ReadConfig(env(nil))
		Expect(err).NotTo(HaveOccurred())
		Expect(c).To(Equal(buildpack.Config{Enabled: true, SidecarMemoryMB: 64}))
	})

	it("declares every variable it reads in buildpack.toml, with the same defaults", func() {
		md, err := libpak.NewBuildModuleMetadata(repoBuildpack(t).Metadata)
		Expect(err).NotTo(HaveOccurred())
		declared := map[string]libpak.BuildModuleConfiguration{}
		for _, c := range md.Configurations {
			declared[c.Name] = c
		}
		for _, name := range []string{buildpack.EnvEnabled, buildpack.EnvSidecarMemory} {
			Expect(declared).To(HaveKey(name))
			Expect(declared[name].Description).NotTo(BeEmpty())
			Expect(declared[name].Build).To(BeTrue())
		}

		cr, err := libpak.NewConfigurationResolver(md)
		Expect(err).NotTo(HaveOccurred())
		fromTOML, err := buildpack.ReadConfig(cr.Resolve)
		Expect(err).NotTo(HaveOccurred())
		fromGo, err := buildpack.ReadConfig(env(nil))
		Expect(err).NotTo(HaveOccurred())
		Expect(fromTOML).To(Equal(fromGo))
	})

	it("reads the opt-out and the memory", func() {
		c, err := buildpack.ReadConfig(env(map[string]string{
			buildpack.EnvEnabled: "FALSE", buildpack.EnvSidecarMemory: "128M",
		}))
		Expect(err).NotTo(HaveOccurred())
		Expect(c).To(Equal(buildpack.Config{Enabled: false, SidecarMemoryMB: 128}))
	})

	it("takes an empty value as the default", func() {
		c, err := buildpack.ReadConfig(env(map[string]string{buildpack.EnvEnabled: " ", buildpack.EnvSidecarMemory: ""}))
		Expect(err).NotTo(HaveOccurred())
		Expect(c).To(Equal(buildpack.Config{Enabled: true, SidecarMemoryMB: 64}))
	})

	it("refuses a bad switch, naming the allowed values", func() {
		_, err := buildpack.ReadConfig(env(map[string]string{buildpack.EnvEnabled: "maybe"}))
		Expect(err).To(MatchError(`BP_HOTTOPIC_ENABLED="maybe" is not allowed: use true or false`))
	})

	it("refuses memory that is not a number of MB in range", func() {
		for _, v := range []string{"lots", "0", "15", "1025", "1G", "-64"} {
			_, err := buildpack.ReadConfig(env(map[string]string{buildpack.EnvSidecarMemory: v}))
			Expect(err).To(MatchError(ContainSubstring(`BP_HOTTOPIC_SIDECAR_MEMORY="` + v + `" is not allowed: use a whole number of megabytes from 16 to 1024`)))
		}
	})
}
