package state_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/internal/cfenv"
)

func TestDevState(t *testing.T) {
	spec.Run(t, "state", testDevState, spec.Report(report.Terminal{}))
}

func testDevState(t *testing.T, when spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	it("says how the CLI reaches each bus: the app's, else the implicit one, else the server itself", func() {
		admin := func(port string) cfenv.Service {
			return cfenv.Service{Name: "x", Credentials: map[string]json.RawMessage{"uri": json.RawMessage(`"nats://127.0.0.1:` + port + `"`)}}
		}
		st := state.State{NATSURL: "nats://127.0.0.1:1", Buses: []state.Bus{
			{Service: "orders", Apps: []string{"enrich"}, Admin: admin("2")},
			{Service: "hottopic-dev", Implicit: true, Apps: []string{"plain"}, Admin: admin("3")},
		}}
		for app, want := range map[string]string{"enrich": "2", "plain": "3", "": "3"} {
			cfg, err := st.OpsNATS(app)
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.URLs).To(Equal([]string{"nats://127.0.0.1:" + want}), app)
		}
		_, err := st.OpsNATS("nosuch")
		Expect(err).To(MatchError("app nosuch is not in the running hottopic dev"))
		Expect(st.Services()).To(Equal([]string{"orders", "hottopic-dev (implicit)"}))

		st.Buses = st.Buses[:1] // every app lists a service: no default bus but the only one
		cfg, err := st.OpsNATS("")
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.URLs).To(Equal([]string{"nats://127.0.0.1:2"}))
		st.Buses = nil // no broker: the server itself
		cfg, err = st.OpsNATS("enrich")
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.URLs).To(Equal([]string{"nats://127.0.0.1:1"}))
	})

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
