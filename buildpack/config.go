// Package buildpack is the Cloud Native Buildpack that puts hottopic-sidecar
// into an app's launch image. Its subpackage classic is the same buildpack for
// the classic Cloud Foundry lifecycle.
package buildpack

import (
	"fmt"
	"strconv"
	"strings"
)

// User configuration, read at build time. buildpack.toml declares the same
// names and defaults under [metadata.configurations].
const (
	EnvEnabled       = "BP_HOTTOPIC_ENABLED"
	EnvSidecarMemory = "BP_HOTTOPIC_SIDECAR_MEMORY"

	// DefaultSidecarMemoryMB is reserved for the sidecar out of the process
	// memory. The sidecar is a single Go process holding one NATS connection
	// and at most `concurrency` events: its RSS stays around 15–30 MB, and 64
	// leaves room for payload spikes and GC headroom while costing a 1 GB app
	// about 6% of its MEMORY_LIMIT. Runtimes that size themselves from
	// MEMORY_LIMIT (the JVM) then keep clear of the sidecar.
	DefaultSidecarMemoryMB = 64
	minSidecarMemoryMB     = 16
	maxSidecarMemoryMB     = 1024
)

// Config is the resolved user configuration.
type Config struct {
	// Enabled is false when the user opted out with BP_HOTTOPIC_ENABLED=false.
	Enabled bool
	// SidecarMemoryMB is the memory reservation for the sidecar process.
	SidecarMemoryMB int
}

// Lookup returns a variable's value and whether it was set; os.LookupEnv and
// libpak's ConfigurationResolver.Resolve both fit.
type Lookup func(name string) (string, bool)

// ReadConfig resolves and validates the configuration. An empty value means
// the default. A bad value is refused with the allowed values named.
func ReadConfig(lookup Lookup) (Config, error) {
	c := Config{Enabled: true, SidecarMemoryMB: DefaultSidecarMemoryMB}

	if v, _ := lookup(EnvEnabled); strings.TrimSpace(v) != "" {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "yes":
			c.Enabled = true
		case "false", "0", "no":
			c.Enabled = false
		default:
			return Config{}, fmt.Errorf("%s=%q is not allowed: use true or false", EnvEnabled, v)
		}
	}

	if v, _ := lookup(EnvSidecarMemory); strings.TrimSpace(v) != "" {
		s := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(v)), "B"), "M")
		mb, err := strconv.Atoi(s)
		if err != nil || mb < minSidecarMemoryMB || mb > maxSidecarMemoryMB {
			return Config{}, fmt.Errorf("%s=%q is not allowed: use a whole number of megabytes from %d to %d, e.g. 64",
				EnvSidecarMemory, v, minSidecarMemoryMB, maxSidecarMemoryMB)
		}
		c.SidecarMemoryMB = mb
	}
	return c, nil
}
