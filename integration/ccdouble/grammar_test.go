package ccdouble

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"
)

func TestGrammar(t *testing.T) {
	spec.Run(t, "grammar", testGrammar, spec.Report(report.Terminal{}))
}

func testGrammar(t *testing.T, when spec.G, it spec.S) {
	Expect := NewWithT(t).Expect

	when("a label_selector is parsed", func() {
		labels := map[string]string{"env": "prod", "tier": "worker", "hottopic.io/enabled": "true", "empty": ""}
		it("matches each operator as CC does, ANDing requirements", func() {
			for sel, want := range map[string]bool{
				"env":                              true,
				"missing":                          false,
				"!missing":                         true,
				"!env":                             false,
				"env=prod":                         true,
				"env==prod":                        true,
				"env=dev":                          false,
				"env!=dev":                         true,
				"missing!=dev":                     true,
				"env!=prod":                        false,
				"tier in (worker,batch)":           true,
				"tier in (web,batch)":              false,
				"tier notin (web,batch)":           true,
				"missing notin (web)":              true,
				"tier notin (worker)":              false,
				"hottopic.io/enabled=true":         true,
				"hottopic.io/enabled=true,env=dev": false,
				"hottopic.io/enabled,tier in (worker,batch),!missing,env!=dev": true,
				"empty=":        true,
				"empty!=":       false,
				"env in (prod)": true,
			} {
				reqs, msg := parseSelector(sel)
				Expect(msg).To(BeEmpty(), sel)
				Expect(matches(reqs, labels)).To(Equal(want), sel)
			}
		})

		it("rejects malformed selectors with CC's messages", func() {
			for sel, want := range map[string]string{
				"":                               "Missing label_selector value",
				"env=prod,":                      "",
				"env===prod":                     "Invalid label_selector value",
				"=prod":                          "Invalid label_selector value",
				"env in prod":                    "Invalid label_selector value",
				"env in(prod)":                   "Invalid label_selector value",
				"a/b/c=x":                        "key has more than one '/'",
				"cloudfoundry.org/x=1":           "prefix 'cloudfoundry.org' is reserved",
				"-env=prod":                      "'-env' starts or ends with invalid characters",
				"env in (pr od)":                 "'pr od' contains invalid characters",
				"env=" + strings.Repeat("v", 64): "is greater than 63 characters",
				"bad_prefix!/x":                  "Invalid label_selector value",
			} {
				_, msg := parseSelector(sel)
				if want == "" {
					Expect(msg).To(BeEmpty(), sel)
					continue
				}
				Expect(msg).To(ContainSubstring(want), sel)
			}
		})
	})

	when("metadata is validated", func() {
		it("accepts valid keys and values, including deletions", func() {
			labels, annotations, problems := validateMetadata(map[string]any{
				"labels":      map[string]any{"hottopic.io/enabled": "true", "a.b-c_d": "", "gone": nil},
				"annotations": map[string]any{"hottopic.io/topics": "orders, payments (EU)", "x": strings.Repeat("é", 5000)},
			})
			Expect(problems).To(BeEmpty())
			Expect(labels).To(HaveKeyWithValue("gone", BeNil()))
			Expect(*labels["hottopic.io/enabled"]).To(Equal("true"))
			Expect(annotations).To(HaveLen(2))
		})

		it("names every problem", func() {
			for name, md := range map[string]map[string]any{
				"label key error: 'bad key' contains invalid characters":                           {"labels": map[string]any{"bad key": "v"}},
				"label key error: key cannot be empty string":                                      {"labels": map[string]any{"": "v"}},
				"label key error: prefix 'cloudfoundry.org' is reserved":                           {"labels": map[string]any{"cloudfoundry.org/x": "v"}},
				"label key error: prefix 'not_dns' must be in valid dns format":                    {"labels": map[string]any{"not_dns/x": "v"}},
				"label key error: 'aaaaaaaa...' is greater than 63 characters":                     {"labels": map[string]any{strings.Repeat("a", 64): "v"}},
				"label value error: 'x-' starts or ends with invalid characters":                   {"labels": map[string]any{"k": "x-"}},
				"label value error: value of 'k' must be a string":                                 {"labels": map[string]any{"k": true}},
				"annotation value error: annotation 'xxxxxxxx...' is greater than 5000 characters": {"annotations": map[string]any{"k": strings.Repeat("x", 5001)}},
				"Metadata has unexpected field(s): 'other'":                                        {"other": map[string]any{}},
				"Metadata 'labels' is not an object":                                               {"labels": "x"},
			} {
				_, _, problems := validateMetadata(map[string]any(md))
				Expect(strings.Join(problems, "; ")).To(ContainSubstring(name))
			}
		})
	})
}
