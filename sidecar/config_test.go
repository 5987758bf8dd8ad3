package sidecar_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/natstest"
	"github.com/hottopic-io/hottopic/sidecar"
)

func TestConfig(t *testing.T) {
	spec.Run(t, "configuration", testConfig, spec.Report(report.Terminal{}))
}

func testConfig(t *testing.T, when spec.G, it spec.S) {
	var (
		Expect     = NewWithT(t).Expect
		Eventually = NewWithT(t).Eventually
		guid       = "6f1c2a4e-0000-4000-8000-0000000000cc"
	)

	when("the environment is wrong", func() {
		// runMain runs the sidecar's entry point in-process and returns its
		// exit code and output.
		runMain := func(e map[string]string) (int, string) {
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			code := sidecar.Main(ctx, func(k string) string { return e[k] }, &out)
			return code, out.String()
		}
		base := func(extra ...string) map[string]string {
			return env(guid, 8080, "nats://127.0.0.1:4222", extra...)
		}
		without := func(e map[string]string, k string) map[string]string { delete(e, k); return e }

		cases := []struct {
			name string
			env  map[string]string
			want string
		}{
			{"no PORT", without(base(), "PORT"), "PORT is not set"},
			{"non-numeric PORT", base("PORT", "web"), "PORT must be a port number from 1 to 65535"},
			{"malformed VCAP_APPLICATION", base("VCAP_APPLICATION", "{nope"), "VCAP_APPLICATION is not valid JSON"},
			{"no VCAP_APPLICATION", without(base(), "VCAP_APPLICATION"), "VCAP_APPLICATION is not set"},
			{"malformed VCAP_SERVICES", base("VCAP_SERVICES", `{"nats":[{"credentials":{"password":"hunter2"`), "VCAP_SERVICES is not valid JSON"},
			{"no NATS bound", without(base("VCAP_SERVICES", `{"mysql":[{"name":"db","tags":["mysql"],"credentials":{}}]}`), "HOTTOPIC_NATS_URL"), "no NATS server configured"},
			{"bad topic", base("HOTTOPIC_TOPICS", "orders.*"), "wildcards"},
			{"non-numeric concurrency", base("HOTTOPIC_TOPICS", "orders", "HOTTOPIC_CONCURRENCY", "lots"), "HOTTOPIC_CONCURRENCY must be a whole number"},
			{"bad timeout", base("HOTTOPIC_TOPICS", "orders", "HOTTOPIC_TIMEOUT_SECONDS", "0"), "HOTTOPIC_TIMEOUT_SECONDS: timeout-seconds must be between 1 and 86400"},
			{"concurrency out of range", base("HOTTOPIC_TOPICS", "orders", "HOTTOPIC_CONCURRENCY", "0"), "HOTTOPIC_CONCURRENCY: concurrency must be between 1 and 1000"},
			{"bad max-deliver", base("HOTTOPIC_TOPICS", "orders", "HOTTOPIC_MAX_DELIVER", "0"), "HOTTOPIC_MAX_DELIVER: max-deliver must be 1 or more"},
			{"bad path", base("HOTTOPIC_TOPICS", "orders", "HOTTOPIC_PATH", "events"), "HOTTOPIC_PATH: path must start with '/'"},
			{"bad output topic", base("HOTTOPIC_TOPICS", "orders", "HOTTOPIC_OUTPUT_TOPIC", "hottopic.out"), "HOTTOPIC_OUTPUT_TOPIC: output-topic: invalid topic"},
			{"bad listen address", base("HOTTOPIC_LISTEN", "8383"), "HOTTOPIC_LISTEN must be host:port"},
			{"bad metrics listen address", base("HOTTOPIC_METRICS_LISTEN", "0.0.0.0"), "HOTTOPIC_METRICS_LISTEN must be host:port"},
			{"bad metrics listen host", base("HOTTOPIC_METRICS_LISTEN", "example:9383"), "HOTTOPIC_METRICS_LISTEN host must be an IP address or localhost"},
			{"bad connect timeout", base("HOTTOPIC_NATS_CONNECT_TIMEOUT", "soon"), "HOTTOPIC_NATS_CONNECT_TIMEOUT must be a positive Go duration"},
		}
		for _, c := range cases {
			it("fails with one clear line: "+c.name, func() {
				code, out := runMain(c.env)
				Expect(code).To(Equal(1))
				Expect(lines(out)).To(HaveLen(1), out)
				Expect(out).To(ContainSubstring("level=ERROR"))
				Expect(out).To(ContainSubstring(c.want))
				Expect(out).NotTo(ContainSubstring("hunter2"))
			})
		}

		it("fails with one clear line when NATS is unreachable", func() {
			port := freePort(t)
			e := base("HOTTOPIC_NATS_URL", "nats://"+"agent:hunter2@127.0.0.1:"+strconv.Itoa(port), "HOTTOPIC_NATS_CONNECT_TIMEOUT", "1s")
			code, out := runMain(e)
			Expect(code).To(Equal(1))
			Expect(out).To(ContainSubstring("cannot connect to NATS"))
			Expect(out).NotTo(ContainSubstring("hunter2"))
			Expect(strings.Count(out, "level=ERROR")).To(Equal(1))
		})
	})

	when("NATS needs credentials from VCAP_SERVICES", func() {
		const password = "pa55-Very-Secret"
		var srv *natstest.Server
		it.Before(func() {
			srv = natstest.Run(t, func(o *server.Options) { o.Username, o.Password = "agent", password })
		})
		vcap := func(pw string) string {
			return fmt.Sprintf(`{"user-provided":[{"name":"events","tags":["hottopic"],"credentials":{"uri":"nats://agent:%s@127.0.0.1:%d","user":"agent","password":%q}}]}`, pw, srv.Port(), pw)
		}

		it("connects, delivers, and never logs the secret", func() {
			app := newApp(t, 0, nil).start(t)
			e := env(guid, app.port, "", "HOTTOPIC_TOPICS", "orders.created", "VCAP_SERVICES", vcap(password))
			delete(e, "HOTTOPIC_NATS_URL")
			p := startSidecar(t, e)
			Eventually(p.Output, 10*time.Second).Should(ContainSubstring("consuming topic"))
			nc := srv.Connect(natsUser("agent", password))
			publishN(t, jsFor(t, nc), "orders.created", 1, "secret-safe")
			Eventually(func() int { return len(app.deliveries()) }, 10*time.Second).Should(Equal(1))
			Expect(p.Output()).To(ContainSubstring("service"))
			Expect(p.Output()).NotTo(ContainSubstring(password))
		})

		it("reports a refused login without the secret", func() {
			e := env(guid, freePort(t), "", "VCAP_SERVICES", vcap("wrong-"+password), "HOTTOPIC_NATS_CONNECT_TIMEOUT", "1s")
			delete(e, "HOTTOPIC_NATS_URL")
			p := startSidecar(t, e)
			Eventually(p.Exited, 10*time.Second).Should(BeTrue())
			Expect(p.ExitCode()).To(Equal(1))
			Expect(p.Output()).To(ContainSubstring("cannot connect to NATS"))
			Expect(p.Output()).To(ContainSubstring("Authorization Violation"))
			Expect(p.Output()).NotTo(ContainSubstring(password))
		})
	})
}
