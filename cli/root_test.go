package cli_test

import (
	"testing"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/cli"
)

func TestVersion(t *testing.T) {
	Expect := NewWithT(t).Expect
	for _, args := range [][]string{{"--version"}, {"version"}} {
		r := run(args...)
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(Equal("hottopic version " + cli.Version + "\n"))
	}
}

// The boolean flags read as switches: pflag turns a backquoted word in a
// usage into a value name ("--dev hottopic dev"), as if they took a value.
func TestEventsHelp(t *testing.T) {
	Expect := NewWithT(t).Expect
	r := run("events", "--help")
	Expect(r.code).To(Equal(0), r.stderr)
	Expect(r.stdout).To(MatchRegexp(`(?m)^\s+--dev\s{2,}show `))
	Expect(r.stdout).To(MatchRegexp(`(?m)^\s+--cf\s{2,}show `))
	Expect(r.stdout).To(MatchRegexp(`(?m)^\s+--data-dir string\s{2,}\S`))
	Expect(r.stdout).NotTo(ContainSubstring("`"))
}
