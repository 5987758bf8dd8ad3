package state_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/dev/state"
)

func TestDevState(t *testing.T) {
	spec.Run(t, "state", testDevState, spec.Report(report.Terminal{}))
}

func testDevState(t *testing.T, when spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	it("finds a running dev runtime and forgets it once removed", func() {
		dir := t.TempDir()
		want := state.State{PID: os.Getpid(), NATSURL: "nats://127.0.0.1:4222", ScalerURL: "http://127.0.0.1:9"}
		Expect(state.Write(dir, want)).To(Succeed())
		got, err := state.Read(dir)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(want))

		state.Remove(dir)
		_, err = state.Read(dir)
		Expect(errors.Is(err, state.ErrNotRunning)).To(BeTrue())
	})

	it("treats a record whose process is gone as not running", func() {
		cmd := exec.Command("true")
		Expect(cmd.Run()).To(Succeed())
		dir := t.TempDir()
		Expect(state.Write(dir, state.State{PID: cmd.Process.Pid})).To(Succeed())
		_, err := state.Read(dir)
		Expect(errors.Is(err, state.ErrNotRunning)).To(BeTrue())
	})

	it("says which file is corrupt", func() {
		dir := t.TempDir()
		Expect(os.WriteFile(filepath.Join(dir, "runtime.json"), []byte("{"), 0o600)).To(Succeed())
		_, err := state.Read(dir)
		Expect(err).To(MatchError(ContainSubstring("runtime.json is corrupt")))
	})
}
