package cfenv

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration reads the environment variable key as a positive Go duration;
// def when it is unset or blank. Every part reads its durations through here,
// so a bad value is reported the same way everywhere.
func Duration(getenv Getenv, key string, def time.Duration) (time.Duration, error) {
	v := strings.TrimSpace(getenv(key))
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s must be a positive Go duration such as 1s, 500ms or 168h, got %q", key, v)
	}
	return d, nil
}

// Port reads the environment variable key as a TCP port from 1 to 65535; def
// when it is unset or blank (def 0 means the variable is required).
func Port(getenv Getenv, key string, def int) (int, error) {
	v := strings.TrimSpace(getenv(key))
	if v == "" {
		if def == 0 {
			return 0, fmt.Errorf("%s is not set", key)
		}
		return def, nil
	}
	return ParsePort(key, v, 1)
}

// ParsePort checks that v, named name in the error, is a port number from
// lowest (0 where "any free port" is allowed) to 65535. Signs, spaces and
// leading zeros are refused: they are typos, not ports.
func ParsePort(name, v string, lowest int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lowest || n > 65535 || strconv.Itoa(n) != v {
		return 0, fmt.Errorf("%s must be a port number from %d to 65535, got %q", name, lowest, v)
	}
	return n, nil
}
