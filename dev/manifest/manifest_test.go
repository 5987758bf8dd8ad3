package manifest_test

import (
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/sclevine/spec"
	"github.com/sclevine/spec/report"

	"github.com/hottopic-io/hottopic/dev/manifest"
)

func TestManifest(t *testing.T) {
	spec.Run(t, "Manifest", testManifest, spec.Report(report.Terminal{}))
}

func testManifest(t *testing.T, when spec.G, it spec.S) {
	var dir string

	it.Before(func() {
		RegisterTestingT(t)
		dir = t.TempDir()
		Expect(os.Mkdir(filepath.Join(dir, "fn"), 0o755)).To(Succeed())
	})

	parse := func(y string) (*manifest.Manifest, error) {
		return manifest.Parse([]byte(y), "manifest.yml", dir)
	}

	it("reads apps, env, instances, metadata and the hottopic sidecar", func() {
		m, err := parse(`---
version: 1
applications:
- name: wordcount
  path: fn
  command: python3 app.py
  instances: 0
  memory: 64M
  buildpacks: [python_buildpack]
  env:
    GREETING: hi
    RETRIES: 3
    DEBUG: true
  metadata:
    labels:
      hottopic.io/mapped: "true"
    annotations:
      hottopic.io/topics: words, lines
      hottopic.io/max-instances: "4"
  sidecars:
  - name: hottopic
    process_types: [web]
    command: hottopic-sidecar
    memory: 32M
  - name: worker-only
    process_types: [worker]
    command: other
- name: plain
  command: ./run.sh
  routes:
  - route: plain.example.com
`)
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Apps).To(HaveLen(2))
		a := m.Apps[0]
		Expect(a.Name).To(Equal("wordcount"))
		Expect(a.Dir).To(Equal(filepath.Join(dir, "fn")))
		Expect(a.Command).To(Equal("python3 app.py"))
		Expect(a.Instances).To(Equal(0))
		Expect(a.Env).To(Equal(map[string]string{"GREETING": "hi", "RETRIES": "3", "DEBUG": "true"}))
		Expect(a.Mapping).NotTo(BeNil())
		Expect(a.Mapping.Topics).To(Equal([]string{"words", "lines"}))
		Expect(a.Mapping.MaxInstances).To(Equal(4))
		Expect(a.Sidecars).To(Equal([]manifest.Sidecar{{Name: "hottopic", Command: "hottopic-sidecar"}}))
		Expect(a.HasHotTopicSidecar()).To(BeTrue())

		b := m.Apps[1]
		Expect(b.Instances).To(Equal(1), "CF's default")
		Expect(b.Mapping).To(BeNil())
		Expect(b.Dir).To(Equal(dir))
		Expect(m.IgnoredNotice()).To(Equal("ignoring manifest fields that only matter on Cloud Foundry: buildpacks (wordcount), memory (wordcount), routes (plain)"))
	})

	it("takes the web process's command and instances from processes", func() {
		m, err := parse("applications:\n- name: a\n  processes:\n  - type: web\n    command: run\n    instances: 2\n  - type: worker\n    command: w\n")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Apps[0].Command).To(Equal("run"))
		Expect(m.Apps[0].Instances).To(Equal(2))
	})

	it("takes the command from a Procfile, as the buildpacks do, and knows the sidecar by its binary name", func() {
		Expect(os.WriteFile(filepath.Join(dir, "fn", "Procfile"), []byte("worker: other\nweb: python3 app.py --port $PORT\n"), 0o644)).To(Succeed())
		m, err := parse("applications:\n- name: a\n  path: fn\n  sidecars:\n  - name: ht\n    process_types: [web]\n    command: '\"${DEPS_DIR:-/home/vcap/deps}/0/bin/hottopic-sidecar\"'\n")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Apps[0].Command).To(Equal("python3 app.py --port $PORT"))
		Expect(m.Apps[0].HasHotTopicSidecar()).To(BeTrue())
	})

	it("reads services as names or mappings with a name, in order", func() {
		m, err := parse("applications:\n- name: a\n  command: x\n  services:\n  - orders-bus\n  - name: audit-bus\n    parameters: {x: 1}\n  - orders-bus\n- name: b\n  command: y\n")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Apps[0].Services).To(Equal([]string{"orders-bus", "audit-bus"}))
		Expect(m.Apps[1].Services).To(BeEmpty())
		Expect(m.IgnoredNotice()).To(BeEmpty(), "services are used locally")
	})

	type bad struct{ yaml, want string }
	for _, c := range []bad{
		{"applications:\n- name: a\n  command: x\n   bad: [\n", "manifest.yml: line 4: invalid YAML: mapping values are not allowed in this context"},
		{"---\napplications:\n- name: a\n  command: x\n  instances: [0\n  env: {}\n", "manifest.yml: line 5: invalid YAML: did not find expected ',' or ']'"},
		{"applications:\n- name: a\n  command: x\n bad: 1\n", "manifest.yml: line 4: invalid YAML: did not find expected key"},
		{"applications:\n- name: a\n\tcommand: x\n", "manifest.yml: line 3: invalid YAML: found a tab character that violates indentation"},
		{"applications:\n- name: a\n  env: {A: 1,\n    B: 2}\n  command: \"x\n  path: .\n", "manifest.yml: line 5: invalid YAML: found unexpected end of stream"},
		{"applications:\n- name: a\n  command: x\njunk: 1\n", "manifest.yml: line 4: unknown top-level field \"junk\""},
		{"applications:\n- name: a\n  command: x\n  comand: y\n", "manifest.yml: line 4: app \"a\": unknown field \"comand\""},
		{"applications:\n- name: a\n  command: x\n  instances: many\n", "manifest.yml: line 4: instances must be a whole number of 0 or more, got \"many\""},
		{"applications:\n- name: a\n  path: nowhere\n  command: x\n", "manifest.yml: line 3: app \"a\": path \"nowhere\" is not a directory"},
		{"applications:\n- name: a\n", "manifest.yml: line 2: app \"a\" has no command and its path has no Procfile"},
		{"applications:\n- name: a\n  command: x\n- name: a\n  command: y\n", "manifest.yml: line 4: app \"a\" is declared twice (first at line 2)"},
		{"applications:\n- name: a\n  command: x\n  metadata:\n    labels: {hottopic.io/mapped: \"true\"}\n    annotations:\n      hottopic.io/topics: t\n      hottopic.io/max-instances: lots\n", "manifest.yml: line 8: app \"a\": annotation hottopic.io/max-instances must be a whole number"},
		{"applications:\n- name: a\n  command: x\n  metadata:\n    annotations:\n      hottopic.io/topics: t\n", "manifest.yml: line 6: app \"a\" has annotation hottopic.io/topics but not label hottopic.io/mapped"},
		{"applications:\n- name: a\n  command: x\n  metadata:\n    labels: {hottopic.io/mapped: \"true\"}\n    annotations:\n      hottopic.io/topics: \"orders.*\"\n", "manifest.yml: line 7: app \"a\": annotation hottopic.io/topics: invalid topic \"orders.*\""},
		{"applications:\n- name: a\n  command: x\n  services: orders-bus\n", "manifest.yml: line 4: app \"a\": services must be a list of service instance names"},
		{"applications:\n- name: a\n  command: x\n  services:\n  - {plan: x}\n", "manifest.yml: line 5: app \"a\": each service must be a name, or a mapping with a name"},
		{"applications:\n- name: a\n  command: x\n  services: [one, two]\n  metadata:\n    labels: {hottopic.io/mapped: \"true\"}\n    annotations: {hottopic.io/topics: t}\n", "manifest.yml: line 4: app \"a\" is mapped to events but lists 2 services (one, two): its sidecar serves one event bus, so list one"},
		{"", "manifest.yml: the manifest is empty"},
		{"- a\n", "manifest.yml: line 1: the manifest must be a mapping"},
	} {
		it("refuses with one line naming the line: "+c.want, func() {
			_, err := parse(c.yaml)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(HavePrefix(c.want))
			Expect(err.Error()).NotTo(ContainSubstring("\n"))
		})
	}

	it("names a missing file", func() {
		_, err := manifest.Load(filepath.Join(dir, "nope.yml"))
		Expect(err).To(MatchError(ContainSubstring("nope.yml not found")))
	})
}
