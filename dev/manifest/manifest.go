// Package manifest reads the part of a Cloud Foundry app manifest that
// `hottopic dev` runs: apps with their path, command, env, instances,
// metadata (the event mappings), services (each an event bus locally) and
// sidecars. Fields that only matter on a real foundation (memory,
// buildpacks, routes…) are accepted and
// reported as ignored; anything else is refused with its line number.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hottopic-io/hottopic/internal/mapping"
)

// SidecarCommand is the command that names this project's own sidecar.
const SidecarCommand = "hottopic-sidecar"

// Manifest is the parsed file.
type Manifest struct {
	Path string // as given
	Apps []App
	// Ignored lists "field (app name)" entries for fields accepted but not
	// used locally, in file order.
	Ignored []string
}

// App is one entry of applications[].
type App struct {
	Name      string
	Dir       string // absolute; the manifest's path, resolved against its directory
	Command   string
	Env       map[string]string
	Instances int
	Labels    map[string]string
	// Annotations are the app's metadata annotations, event mapping included.
	Annotations map[string]string
	Sidecars    []Sidecar
	// Services are the names the app lists under services:, in order; the
	// dev runtime makes each an event bus and binds the app to it.
	Services []string
	// Mapping is set when the app carries label hottopic.io/mapped: "true".
	Mapping *mapping.Mapping
	Line    int // where the app starts in the file
}

// Sidecar is one entry of an app's sidecars[] that runs beside web instances.
type Sidecar struct {
	Name    string
	Command string
}

// IsHotTopic reports whether the sidecar is this project's own.
func (s Sidecar) IsHotTopic() bool {
	f := strings.Fields(s.Command)
	return len(f) > 0 && filepath.Base(strings.Trim(f[0], `"'`)) == SidecarCommand
}

// HasHotTopicSidecar reports whether the app declares this project's sidecar.
func (a App) HasHotTopicSidecar() bool {
	for _, s := range a.Sidecars {
		if s.IsHotTopic() {
			return true
		}
	}
	return false
}

// Error is a problem at a line of the manifest. Its text is one line.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Fields of an app that are valid on Cloud Foundry but have no meaning locally.
var ignoredAppFields = map[string]bool{
	"buildpack": true, "buildpacks": true, "disk_quota": true, "disk-quota": true,
	"docker": true, "health-check-http-endpoint": true, "health-check-interval": true,
	"health-check-invocation-timeout": true, "health-check-type": true,
	"readiness-health-check-http-endpoint": true, "readiness-health-check-interval": true,
	"readiness-health-check-invocation-timeout": true, "readiness-health-check-type": true,
	"lifecycle": true, "log-rate-limit-per-second": true, "memory": true,
	"no-route": true, "random-route": true, "default-route": true, "routes": true,
	"stack": true, "timeout": true, "cnb-credentials": true,
}

// Load reads and checks a manifest file.
func Load(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("manifest %s not found", path)
		}
		return nil, fmt.Errorf("cannot read manifest %s: %v", path, errors.Unwrap(err))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return Parse(b, path, filepath.Dir(abs))
}

// Parse checks manifest bytes; file names the manifest in errors and dir
// resolves relative app paths.
func Parse(b []byte, file, dir string) (*Manifest, error) {
	p := &parser{file: file, dir: dir, m: &Manifest{Path: file}}
	if err := p.parse(b); err != nil {
		return nil, err
	}
	return p.m, nil
}

type parser struct {
	file string
	dir  string
	m    *Manifest
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) parse(b []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return p.yamlError(b, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return p.errf(nil, "the manifest is empty; it needs an applications: list")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return p.errf(root, "the manifest must be a mapping with an applications: list")
	}
	var apps *yaml.Node
	for i := 0; i < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "applications":
			apps = v
		case "version":
			if v.Value != "1" {
				return p.errf(v, "manifest version %q is not supported (only 1)", v.Value)
			}
		default:
			return p.errf(k, "unknown top-level field %q (a manifest has version and applications)", k.Value)
		}
	}
	if apps == nil {
		return p.errf(root, "the manifest has no applications: list")
	}
	if apps.Kind != yaml.SequenceNode {
		return p.errf(apps, "applications must be a list")
	}
	if len(apps.Content) == 0 {
		return p.errf(apps, "applications is empty")
	}
	names := map[string]int{}
	for _, n := range apps.Content {
		a, err := p.app(n)
		if err != nil {
			return err
		}
		if first, dup := names[a.Name]; dup {
			return p.errf(n, "app %q is declared twice (first at line %d)", a.Name, first)
		}
		names[a.Name] = n.Line
		p.m.Apps = append(p.m.Apps, a)
	}
	return nil
}

// yamlError keeps the parser's message on one line with the line where the
// problem is. The parser's own line number is often one off (it counts some
// positions from zero, and names where the enclosing construct starts), so
// the line is the first one after which the file fails the same way.
func (p *parser) yamlError(b []byte, err error) error {
	msg := yamlMessage(err)
	line := 0
	lines := bytes.SplitAfter(b, []byte("\n"))
	for k := 1; k <= len(lines); k++ {
		var n yaml.Node
		if perr := yaml.Unmarshal(bytes.Join(lines[:k], nil), &n); perr != nil && yamlMessage(perr) == msg {
			line = k
			break
		}
	}
	return &Error{File: p.file, Line: line, Msg: "invalid YAML: " + msg}
}

// yamlMessage is the parser's message without its "yaml: line N:" prefix.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ":"); i > 0 {
			if _, err := strconv.Atoi(rest[:i]); err == nil {
				msg = strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return msg
}

func (p *parser) app(n *yaml.Node) (App, error) {
	a := App{Instances: 1, Env: map[string]string{}, Labels: map[string]string{}, Annotations: map[string]string{}, Line: n.Line}
	if n.Kind != yaml.MappingNode {
		return a, p.errf(n, "each entry of applications must be a mapping with at least a name")
	}
	if v := lookup(n, "name"); v == nil {
		return a, p.errf(n, "an app has no name")
	} else if name, err := p.str(v, "name"); err != nil {
		return a, err
	} else if name == "" {
		return a, p.errf(v, "an app name must not be empty")
	} else {
		a.Name = name
	}
	relPath := "."
	var pathNode, commandNode, servicesNode *yaml.Node
	var ignored []string
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "name":
		case "path":
			pathNode = v
			relPath, err = p.str(v, "path")
		case "command":
			commandNode = v
			a.Command, err = p.str(v, "command")
		case "instances":
			a.Instances, err = p.count(v, "instances")
		case "env":
			a.Env, err = p.stringMap(v, "env")
		case "metadata":
			err = p.metadata(v, &a)
		case "sidecars":
			a.Sidecars, err = p.sidecars(v, a.Name)
		case "services":
			servicesNode = v
			a.Services, err = p.services(v, a.Name)
		case "processes":
			err = p.processes(v, &a, &commandNode)
		default:
			if !ignoredAppFields[k.Value] {
				return a, p.errf(k, "app %q: unknown field %q", a.Name, k.Value)
			}
			ignored = append(ignored, k.Value)
		}
		if err != nil {
			return a, err
		}
	}
	for _, f := range ignored {
		p.m.Ignored = append(p.m.Ignored, fmt.Sprintf("%s (%s)", f, a.Name))
	}
	dir := relPath
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(p.dir, dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		at := pathNode
		if at == nil {
			at = n
		}
		return a, p.errf(at, "app %q: path %q is not a directory", a.Name, relPath)
	}
	a.Dir = dir
	if strings.TrimSpace(a.Command) == "" {
		a.Command = procfileWeb(dir) // as the buildpacks do
	}
	if strings.TrimSpace(a.Command) == "" {
		at := commandNode
		if at == nil {
			at = n
		}
		return a, p.errf(at, "app %q has no command and its path has no Procfile with a web: line; locally there is no buildpack to find one", a.Name)
	}
	if mapping.IsMapped(a.Labels) {
		m, err := mapping.FromMetadata("", a.Name, a.Annotations)
		if err != nil {
			return a, p.errf(annotationNode(n, err.Error()), "app %q: %v", a.Name, err)
		}
		a.Mapping = &m
		if len(a.Services) > 1 {
			return a, p.errf(servicesNode, "app %q is mapped to events but lists %d services (%s): its sidecar serves one event bus, so list one", a.Name, len(a.Services), strings.Join(a.Services, ", "))
		}
	} else if _, ok := a.Annotations[mapping.AnnTopics]; ok {
		return a, p.errf(lookupPath(n, "metadata", "annotations"), "app %q has annotation %s but not label %s: \"true\", so it would never get events", a.Name, mapping.AnnTopics, mapping.LabelMapped)
	}
	return a, nil
}

// procfileWeb is the web command of a Procfile in dir, or "".
func procfileWeb(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "Procfile"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if cmd, ok := strings.CutPrefix(strings.TrimSpace(line), "web:"); ok {
			return strings.TrimSpace(cmd)
		}
	}
	return ""
}

func (p *parser) metadata(n *yaml.Node, a *App) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "app %q: metadata must be a mapping with labels and annotations", a.Name)
	}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "labels":
			a.Labels, err = p.stringMap(v, "metadata.labels")
		case "annotations":
			a.Annotations, err = p.stringMap(v, "metadata.annotations")
		default:
			return p.errf(k, "app %q: unknown metadata field %q (labels, annotations)", a.Name, k.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) sidecars(n *yaml.Node, app string) ([]Sidecar, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "app %q: sidecars must be a list", app)
	}
	var out []Sidecar
	for _, s := range n.Content {
		if s.Kind != yaml.MappingNode {
			return nil, p.errf(s, "app %q: each sidecar must be a mapping with name, process_types and command", app)
		}
		var sc Sidecar
		web := false
		for i := 0; i < len(s.Content); i += 2 {
			k, v := s.Content[i], s.Content[i+1]
			var err error
			switch k.Value {
			case "name":
				sc.Name, err = p.str(v, "sidecar name")
			case "command":
				sc.Command, err = p.str(v, "sidecar command")
			case "process_types":
				if v.Kind != yaml.SequenceNode {
					return nil, p.errf(v, "app %q: sidecar process_types must be a list", app)
				}
				for _, t := range v.Content {
					web = web || t.Value == "web"
				}
			case "memory":
			default:
				return nil, p.errf(k, "app %q: unknown sidecar field %q (name, process_types, command, memory)", app, k.Value)
			}
			if err != nil {
				return nil, err
			}
		}
		if sc.Name == "" || strings.TrimSpace(sc.Command) == "" {
			return nil, p.errf(s, "app %q: a sidecar needs a name and a command", app)
		}
		if web { // only web instances run locally
			out = append(out, sc)
		}
	}
	return out, nil
}

// services reads services: a list of names, or of mappings with a name
// (binding_name and parameters are accepted; they do not change a local
// binding).
func (p *parser) services(n *yaml.Node, app string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "app %q: services must be a list of service instance names", app)
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range n.Content {
		name := s.Value
		if s.Kind == yaml.MappingNode {
			name = ""
			if v := lookup(s, "name"); v != nil && v.Kind == yaml.ScalarNode {
				name = v.Value
			}
		} else if s.Kind != yaml.ScalarNode {
			name = ""
		}
		if name = strings.TrimSpace(name); name == "" {
			return nil, p.errf(s, "app %q: each service must be a name, or a mapping with a name", app)
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out, nil
}

// processes takes the web process's command and instances, as CF does when
// the app-level fields are absent.
func (p *parser) processes(n *yaml.Node, a *App, commandNode **yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return p.errf(n, "app %q: processes must be a list", a.Name)
	}
	for _, proc := range n.Content {
		if proc.Kind != yaml.MappingNode {
			return p.errf(proc, "app %q: each process must be a mapping with a type", a.Name)
		}
		if t := lookup(proc, "type"); t == nil || t.Value != "web" {
			p.m.Ignored = append(p.m.Ignored, fmt.Sprintf("non-web processes (%s)", a.Name))
			continue
		}
		if v := lookup(proc, "command"); v != nil && a.Command == "" {
			c, err := p.str(v, "command")
			if err != nil {
				return err
			}
			a.Command, *commandNode = c, v
		}
		if v := lookup(proc, "instances"); v != nil {
			c, err := p.count(v, "instances")
			if err != nil {
				return err
			}
			a.Instances = c
		}
	}
	return nil
}

func (p *parser) str(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", p.errf(n, "%s must be a single value", what)
	}
	return n.Value, nil
}

func (p *parser) count(n *yaml.Node, what string) (int, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, p.errf(n, "%s must be a whole number", what)
	}
	c, err := strconv.Atoi(n.Value)
	if err != nil || c < 0 {
		return 0, p.errf(n, "%s must be a whole number of 0 or more, got %q", what, n.Value)
	}
	return c, nil
}

// stringMap reads a mapping of scalars; numbers and booleans are kept as
// written, as CF does for env and metadata values.
func (p *parser) stringMap(n *yaml.Node, what string) (map[string]string, error) {
	out := map[string]string{}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return out, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s must be a mapping of names to values", what)
	}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return nil, p.errf(k, "%s: keys must be plain names", what)
		}
		if v.Kind != yaml.ScalarNode {
			return nil, p.errf(v, "%s: value of %q must be a single value, not a list or mapping", what, k.Value)
		}
		if v.Tag == "!!null" {
			out[k.Value] = ""
			continue
		}
		out[k.Value] = v.Value
	}
	return out, nil
}

func lookup(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// annotationNode is the line of the annotation an error names, else of the
// annotations themselves.
func annotationNode(app *yaml.Node, msg string) *yaml.Node {
	anns := lookupPath(app, "metadata", "annotations")
	if anns.Kind == yaml.MappingNode {
		for i := 0; i < len(anns.Content); i += 2 {
			if strings.Contains(msg, "annotation "+anns.Content[i].Value+" ") {
				return anns.Content[i]
			}
		}
	}
	return anns
}

// lookupPath returns the deepest node found along keys, for error lines.
func lookupPath(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		next := lookup(n, k)
		if next == nil {
			return n
		}
		n = next
	}
	return n
}

// IgnoredNotice is the one line telling which fields are not used locally,
// or "" when there are none.
func (m *Manifest) IgnoredNotice() string {
	if len(m.Ignored) == 0 {
		return ""
	}
	seen := map[string]bool{}
	var list []string
	for _, f := range m.Ignored {
		if !seen[f] {
			seen[f] = true
			list = append(list, f)
		}
	}
	sort.Strings(list)
	return "ignoring manifest fields that only matter on Cloud Foundry: " + strings.Join(list, ", ")
}
