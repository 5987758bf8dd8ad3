package broker

// A bus's limits are written into its account JWT, so every server enforces
// them: they keep one tenant from exhausting what all tenants share (disk,
// memory, connections, and the streams and consumers every server of a
// cluster keeps state for).

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hottopic-io/hottopic/internal/cfenv"
)

// Default storage of a bus (and the server sizes hottopic dev derives from it).
const (
	BusDiskStorage   = 10 << 30 // 10 GiB
	BusMemoryStorage = 256 << 20
)

// BusLimits are what one bus account may use; -1 is no limit.
type BusLimits struct {
	Disk, Memory  int64 // JetStream storage, bytes
	Connections   int64
	Subscriptions int64
	Streams       int64
	Consumers     int64
}

// The broker's variables for BusLimits.
const (
	EnvBusDisk          = "HOTTOPIC_BUS_DISK"
	EnvBusMemory        = "HOTTOPIC_BUS_MEMORY"
	EnvBusConnections   = "HOTTOPIC_BUS_MAX_CONNECTIONS"
	EnvBusSubscriptions = "HOTTOPIC_BUS_MAX_SUBSCRIPTIONS"
	EnvBusStreams       = "HOTTOPIC_BUS_MAX_STREAMS"
	EnvBusConsumers     = "HOTTOPIC_BUS_MAX_CONSUMERS"
)

// DefaultBusLimits leave room for a bus of a few hundred topics and a
// thousand app instances (each sidecar holds one connection, a few
// subscriptions and one watch consumer; each topic a stream and a consumer
// per mapped app and the archive's).
func DefaultBusLimits() BusLimits {
	return BusLimits{
		Disk: BusDiskStorage, Memory: BusMemoryStorage,
		Connections: 1000, Subscriptions: 20000, Streams: 1000, Consumers: 5000,
	}
}

// busLimitsFromEnv reads the limits, the defaults where a variable is unset.
func busLimitsFromEnv(getenv cfenv.Getenv) (BusLimits, error) {
	l := DefaultBusLimits()
	for _, v := range []struct {
		key   string
		dst   *int64
		bytes bool
	}{
		{EnvBusDisk, &l.Disk, true}, {EnvBusMemory, &l.Memory, true},
		{EnvBusConnections, &l.Connections, false}, {EnvBusSubscriptions, &l.Subscriptions, false},
		{EnvBusStreams, &l.Streams, false}, {EnvBusConsumers, &l.Consumers, false},
	} {
		raw := strings.TrimSpace(getenv(v.key))
		if raw == "" {
			continue
		}
		n, err := parseLimit(raw, v.bytes)
		if err != nil {
			return l, fmt.Errorf("%s: %w", v.key, err)
		}
		*v.dst = n
	}
	return l, nil
}

var byteUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}}

// parseLimit reads a count of 1 or more, or -1 (no limit); sizes may end in
// KiB, MiB, GiB or TiB.
func parseLimit(raw string, bytes bool) (int64, error) {
	if raw == "-1" {
		return -1, nil
	}
	num, shift := raw, uint(0)
	if bytes {
		for _, u := range byteUnits {
			if s, ok := strings.CutSuffix(raw, u.suffix); ok {
				num, shift = strings.TrimSpace(s), u.shift
				break
			}
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 || n > (1<<62)>>shift {
		if bytes {
			return 0, fmt.Errorf("%q is not a size: bytes (1 or more, or -1 for no limit), optionally with KiB, MiB, GiB or TiB", raw)
		}
		return 0, fmt.Errorf("%q is not a limit: a whole number, 1 or more, or -1 for no limit", raw)
	}
	return n << shift, nil
}

// String is the limits as a log or catalog line shows them.
func (l BusLimits) String() string {
	size := func(n int64) string {
		if n < 0 {
			return "unlimited"
		}
		for _, u := range byteUnits {
			if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
				return strconv.FormatInt(n>>u.shift, 10) + " " + u.suffix
			}
		}
		return strconv.FormatInt(n, 10) + " B"
	}
	count := func(n int64) string {
		if n < 0 {
			return "unlimited"
		}
		return strconv.FormatInt(n, 10)
	}
	return fmt.Sprintf("%s of disk, %s of memory, %s connections, %s subscriptions, %s streams, %s consumers",
		size(l.Disk), size(l.Memory), count(l.Connections), count(l.Subscriptions), count(l.Streams), count(l.Consumers))
}
