package classic

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Main runs the classic script named command (detect, supply or finalize)
// for the buildpack rooted at root, and returns the process exit code.
// Errors are one line on stderr.
func Main(command string, args []string, root string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", Name, err)
		return 1
	}
	switch command {
	case "detect":
		// Never chosen by auto-detection: as the only (final) buildpack it could
		// not run the app. Named with -b, the lifecycle skips detect.
		return 1
	case "supply":
		s := Supplier{Root: root, Lookup: os.LookupEnv, Out: stdout}
		if err := s.Supply(args); err != nil {
			if errors.Is(err, errUsage) {
				return fail(err)
			}
			return fail(fmt.Errorf("supply failed: %w", err))
		}
		return 0
	case "finalize", "release", "compile":
		return fail(fmt.Errorf("this is a supply buildpack: name it before the app's language buildpack, e.g. cf push APP -b %s -b python_buildpack", Name))
	}
	return fail(fmt.Errorf("unknown command %q", command))
}

// RootFromExecutable finds the buildpack root from the running binary, which
// scripts/build.sh puts at <root>/bin/main (bin/supply and the others link to it).
func RootFromExecutable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate the buildpack: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", fmt.Errorf("locate the buildpack: %w", err)
	}
	return filepath.Dir(filepath.Dir(exe)), nil
}
