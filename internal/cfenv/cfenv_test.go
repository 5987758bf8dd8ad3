package cfenv_test

import (
	"testing"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/internal/cfenv"
)

func TestCFEnv(t *testing.T) {
	spec.Run(t, "cfenv", testCFEnv, spec.Report(report.Terminal{}))
}

func env(m map[string]string) cfenv.Getenv { return func(k string) string { return m[k] } }

func testCFEnv(t *testing.T, when spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	when("VCAP_APPLICATION", func() {
		it("reads the app GUID, name and instance index", func() {
			app, err := cfenv.App(env(map[string]string{
				"VCAP_APPLICATION": `{"application_id":"fa05","application_name":"orders","space_name":"prod","instance_index":2,"cf_api":"https://api.example.com"}`,
			}))
			Expect(err).NotTo(HaveOccurred())
			Expect(app).To(Equal(cfenv.Application{ID: "fa05", Name: "orders", SpaceName: "prod", CFAPI: "https://api.example.com", InstanceIndex: 2}))
		})

		it("falls back to name and CF_INSTANCE_INDEX (CNB apps)", func() {
			app, err := cfenv.App(env(map[string]string{
				"VCAP_APPLICATION":  `{"application_id":"fa05","name":"orders"}`,
				"CF_INSTANCE_INDEX": "3",
			}))
			Expect(err).NotTo(HaveOccurred())
			Expect(app.Name).To(Equal("orders"))
			Expect(app.InstanceIndex).To(Equal(3))
		})

		it("is empty when unset and refuses malformed values in one line", func() {
			app, err := cfenv.App(env(nil))
			Expect(err).NotTo(HaveOccurred())
			Expect(app.ID).To(BeEmpty())

			_, err = cfenv.App(env(map[string]string{"VCAP_APPLICATION": `{"application_id":`}))
			Expect(err).To(MatchError(ContainSubstring("VCAP_APPLICATION is not valid JSON")))

			// Valid JSON of the wrong shape: said in JSON's words, not Go's.
			_, err = cfenv.App(env(map[string]string{"VCAP_APPLICATION": `["app"]`}))
			Expect(err).To(MatchError("VCAP_APPLICATION must be a JSON object of the app's details: expected an object, found an array"))
			_, err = cfenv.App(env(map[string]string{"VCAP_APPLICATION": `{"application_id":42}`}))
			Expect(err).To(MatchError(`VCAP_APPLICATION must be a JSON object of the app's details: field "application_id" should be a string, not a number`))

			_, err = cfenv.App(env(map[string]string{"VCAP_APPLICATION": `{"instance_index":"x"}`}))
			Expect(err).To(MatchError(ContainSubstring("instance_index")))

			_, err = cfenv.App(env(map[string]string{"CF_INSTANCE_INDEX": "-1"}))
			Expect(err).To(MatchError(ContainSubstring("CF_INSTANCE_INDEX")))
		})
	})

	when("VCAP_SERVICES", func() {
		const vcap = `{
		  "user-provided":[{"name":"plain","tags":["other"],"credentials":{"uri":"nats://a:4222"}},
		                   {"name":"by-nats","tags":["NATS"],"credentials":{"urls":["nats://b:4222","nats://c:4222"]}}],
		  "nats-service":[{"name":"by-hottopic","tags":["hottopic"],"credentials":{"uri":"nats://d:4222","password":"s3cret"}}]
		}`

		it("prefers the hottopic tag, then nats", func() {
			svcs, err := cfenv.Services(env(map[string]string{"VCAP_SERVICES": vcap}))
			Expect(err).NotTo(HaveOccurred())
			svc, ok := cfenv.FindNATS(svcs)
			Expect(ok).To(BeTrue())
			Expect(svc.Name).To(Equal("by-hottopic"))
			Expect(svc.Label).To(Equal("nats-service"))

			var others []cfenv.Service
			for _, s := range svcs {
				if s.Name != "by-hottopic" {
					others = append(others, s)
				}
			}
			svc, ok = cfenv.FindNATS(others)
			Expect(ok).To(BeTrue())
			Expect(svc.Name).To(Equal("by-nats"))
			urls, err := svc.Credential("urls")
			Expect(err).NotTo(HaveOccurred())
			Expect(urls).To(Equal("nats://b:4222,nats://c:4222"))
		})

		it("finds nothing when no service is tagged", func() {
			svcs, err := cfenv.Services(env(map[string]string{"VCAP_SERVICES": `{"x":[{"name":"db","tags":["mysql"]}]}`}))
			Expect(err).NotTo(HaveOccurred())
			_, ok := cfenv.FindNATS(svcs)
			Expect(ok).To(BeFalse())
		})

		it("refuses malformed JSON without echoing it", func() {
			_, err := cfenv.Services(env(map[string]string{"VCAP_SERVICES": `{"x":[{"credentials":{"password":"s3cret"`}))
			Expect(err).To(MatchError(ContainSubstring("VCAP_SERVICES is not valid JSON")))
			Expect(err.Error()).NotTo(ContainSubstring("s3cret"))

			_, err = cfenv.Services(env(map[string]string{"VCAP_SERVICES": `["not","an","object"]`}))
			Expect(err).To(MatchError(ContainSubstring("VCAP_SERVICES")))
		})

		it("refuses a credential that is not a string", func() {
			svcs, err := cfenv.Services(env(map[string]string{"VCAP_SERVICES": `{"x":[{"name":"n","tags":["nats"],"credentials":{"uri":{"host":"h"}}}]}`}))
			Expect(err).NotTo(HaveOccurred())
			_, err = svcs[0].Credential("uri")
			Expect(err).To(MatchError(`credential "uri" of service "n" must be a string`))
		})
	})
}
