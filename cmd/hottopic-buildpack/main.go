// Command hottopic-buildpack is the buildpack's one binary, packaged as
// linux/<arch>/bin/main with bin/detect, bin/build (Cloud Native Buildpack,
// through libpak), bin/supply and bin/finalize (classic Cloud Foundry
// buildpack) linking to it; it dispatches on the name it was called by.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/paketo-buildpacks/libpak/v2"
	"github.com/paketo-buildpacks/libpak/v2/log"

	"github.com/hottopic-io/hottopic/buildpack"
	"github.com/hottopic-io/hottopic/buildpack/classic"
)

// version is stamped by scripts/build.sh.
var version = "dev"

func main() {
	switch command := filepath.Base(os.Args[0]); command {
	case "main", "hottopic-buildpack":
		// Run by its own name: say which build it is.
		fmt.Println(classic.Name, version)
		return
	case "detect":
		// Both lifecycles call bin/detect; only the CNB one says where the buildpack is.
		if _, cnb := os.LookupEnv("CNB_BUILDPACK_DIR"); cnb {
			break
		}
		fallthrough
	case "supply", "finalize", "release", "compile":
		root, err := classic.RootFromExecutable()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", classic.Name, err)
			os.Exit(1)
		}
		os.Exit(classic.Main(command, os.Args[1:], root, os.Stdout, os.Stderr))
	}

	libpak.BuildpackMain(buildpack.Detect{}.Detect, buildpack.NewBuild(log.NewPaketoLogger(os.Stdout)).Build)
}
