// Package mapping defines an event mapping — (app, topics, settings) — in its
// three spellings: Cloud Controller metadata (labels and annotations), the
// sidecar's static-mode environment, and the JSON value in the
// hottopic_mappings KV bucket that the scaler writes and sidecars watch.
package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hottopic-io/hottopic/internal/topic"
)

// Bucket is the JetStream KV bucket holding one key per mapped app GUID.
const Bucket = "hottopic_mappings"

// Metadata keys on the Cloud Controller app.
const (
	LabelMapped     = "hottopic.io/mapped"
	AnnTopics       = "hottopic.io/topics"
	AnnMin          = "hottopic.io/min-instances"
	AnnMax          = "hottopic.io/max-instances"
	AnnLagPer       = "hottopic.io/lag-per-instance"
	AnnIdleSeconds  = "hottopic.io/idle-seconds"
	AnnConcurrency  = "hottopic.io/concurrency"
	AnnPath         = "hottopic.io/path"
	AnnTimeout      = "hottopic.io/timeout-seconds"
	AnnMaxDeliver   = "hottopic.io/max-deliver"
	AnnOutputTopic  = "hottopic.io/output-topic"
	AnnBatchSize    = "hottopic.io/batch-size"
	AnnBatchWait    = "hottopic.io/batch-wait-ms"
	LabelMappedTrue = "true"
)

// MaxInstancesLimit bounds max-instances (and so min-instances): a bigger
// value is a typo far more often than a plan, and the scaler would ask
// Cloud Controller for it.
const MaxInstancesLimit = 1000

// AnnotationPrefix is the prefix of every Hot Topic annotation and label.
const AnnotationPrefix = "hottopic.io/"

// SettingAnnotations lists every settings annotation (not topics), in
// documentation order.
var SettingAnnotations = []string{AnnMin, AnnMax, AnnLagPer, AnnIdleSeconds, AnnConcurrency, AnnPath, AnnTimeout, AnnMaxDeliver, AnnOutputTopic, AnnBatchSize, AnnBatchWait}

// MaxBatchSize bounds batch-size, and concurrency × batch-size: the events
// one instance may hold, a bound on one sidecar's memory. (The consumer's
// MaxAckPending grows with max-instances: provision.MaxAckPending.)
const MaxBatchSize = 1000

// Settings are a mapping's tunables. The JSON form is the KV value's schema.
type Settings struct {
	MinInstances   int    `json:"min_instances"`
	MaxInstances   int    `json:"max_instances"`
	LagPerInstance int    `json:"lag_per_instance"`
	IdleSeconds    int    `json:"idle_seconds"`
	Concurrency    int    `json:"concurrency"`
	Path           string `json:"path"`
	TimeoutSeconds int    `json:"timeout_seconds"`
	MaxDeliver     int    `json:"max_deliver"`
	OutputTopic    string `json:"output_topic,omitempty"`
	BatchSize      int    `json:"batch_size,omitempty"`    // events per POST (absent from an older KV value: 1)
	BatchWaitMS    int    `json:"batch_wait_ms,omitempty"` // how long a partial batch may wait to fill
}

// Defaults are the documented defaults.
func Defaults() Settings {
	return Settings{
		MinInstances:   0,
		MaxInstances:   10,
		LagPerInstance: 10,
		IdleSeconds:    60,
		Concurrency:    1,
		Path:           "/",
		TimeoutSeconds: 60,
		MaxDeliver:     5,
		BatchSize:      1,
		BatchWaitMS:    20,
	}
}

// Mapping is one app's resolved mapping: the value stored under key
// <app-guid> in the KV bucket.
type Mapping struct {
	AppGUID string   `json:"app_guid"`
	AppName string   `json:"app_name,omitempty"`
	Topics  []string `json:"topics"`
	Settings
}

// Validate checks the settings against each other and their ranges.
func (s Settings) Validate() error {
	bad := func(ann, format string, a ...any) error {
		return &SettingError{Annotation: ann, Err: fmt.Errorf(format, a...)}
	}
	switch {
	case s.MinInstances < 0:
		return bad(AnnMin, "min-instances must be 0 or more, got %d", s.MinInstances)
	case s.MaxInstances < 1 || s.MaxInstances > MaxInstancesLimit:
		return bad(AnnMax, "max-instances must be between 1 and %d, got %d", MaxInstancesLimit, s.MaxInstances)
	case s.MinInstances > s.MaxInstances:
		return bad(AnnMin, "min-instances (%d) must not exceed max-instances (%d)", s.MinInstances, s.MaxInstances)
	case s.LagPerInstance < 1:
		return bad(AnnLagPer, "lag-per-instance must be 1 or more, got %d", s.LagPerInstance)
	case s.IdleSeconds < 0:
		return bad(AnnIdleSeconds, "idle-seconds must be 0 or more, got %d", s.IdleSeconds)
	case s.Concurrency < 1 || s.Concurrency > 1000:
		return bad(AnnConcurrency, "concurrency must be between 1 and 1000, got %d", s.Concurrency)
	case !strings.HasPrefix(s.Path, "/") || strings.ContainsAny(s.Path, " \t\r\n?#"):
		return bad(AnnPath, "path must start with '/' and hold no spaces, '?' or '#', got %q", s.Path)
	case s.TimeoutSeconds < 1 || s.TimeoutSeconds > 86400:
		return bad(AnnTimeout, "timeout-seconds must be between 1 and 86400, got %d", s.TimeoutSeconds)
	case s.MaxDeliver < 1:
		return bad(AnnMaxDeliver, "max-deliver must be 1 or more, got %d", s.MaxDeliver)
	case s.BatchSize < 1 || s.BatchSize > MaxBatchSize:
		return bad(AnnBatchSize, "batch-size must be between 1 and %d, got %d", MaxBatchSize, s.BatchSize)
	case s.BatchWaitMS < 0 || s.BatchWaitMS > 60000:
		return bad(AnnBatchWait, "batch-wait-ms must be between 0 and 60000, got %d", s.BatchWaitMS)
	case s.BatchSize > 1 && s.Concurrency*s.BatchSize > MaxBatchSize:
		return bad(AnnBatchSize, "concurrency × batch-size must not exceed %d (the events one instance may hold), got %d × %d", MaxBatchSize, s.Concurrency, s.BatchSize)
	case s.BatchSize > 1 && s.OutputTopic != "":
		return bad(AnnBatchSize, "batch-size %d cannot be combined with output-topic: a batch's response is the batch's outcome, not an event", s.BatchSize)
	}
	if s.OutputTopic != "" {
		if err := topic.Validate(s.OutputTopic); err != nil {
			return bad(AnnOutputTopic, "output-topic: %w", err)
		}
	}
	return nil
}

// SettingError is a bad setting value; Annotation names the setting so a
// caller can name it as its user spelled it (e.g. an environment variable).
type SettingError struct {
	Annotation string
	Err        error
}

func (e *SettingError) Error() string { return e.Err.Error() }
func (e *SettingError) Unwrap() error { return e.Err }

// Validate checks the whole mapping.
func (m Mapping) Validate() error {
	if len(m.Topics) == 0 {
		return fmt.Errorf("no topics")
	}
	for _, t := range m.Topics {
		if err := topic.Validate(t); err != nil {
			return err
		}
	}
	if err := m.Settings.Validate(); err != nil {
		return err
	}
	return m.checkOutputLoop()
}

// checkOutputLoop refuses an output topic that is also an input: every
// response would trigger the app again, forever, at max instances.
func (m Mapping) checkOutputLoop() error {
	for _, t := range m.Topics {
		if t == m.OutputTopic {
			return fmt.Errorf("output-topic %q is also an input topic: each response would trigger the app again, forever", t)
		}
	}
	return nil
}

// Encode is the KV value.
func (m Mapping) Encode() ([]byte, error) { return json.Marshal(m) }

// Decode parses and validates a KV value.
func Decode(b []byte) (Mapping, error) {
	m := Mapping{Settings: Defaults()}
	if err := json.Unmarshal(b, &m); err != nil {
		return Mapping{}, fmt.Errorf("mapping value is not valid JSON: %v", err)
	}
	if err := m.Validate(); err != nil {
		return Mapping{}, fmt.Errorf("mapping for app %s: %w", m.AppGUID, err)
	}
	return m, nil
}

// IsMapped reports whether the app's labels mark it as mapped.
func IsMapped(labels map[string]string) bool { return labels[LabelMapped] == LabelMappedTrue }

// FromMetadata resolves a mapping from an app's annotations. Missing settings
// take their defaults; any bad value is an error naming the annotation.
func FromMetadata(appGUID, appName string, annotations map[string]string) (Mapping, error) {
	m := Mapping{AppGUID: appGUID, AppName: appName, Settings: Defaults()}
	topics, err := topic.ParseList(annotations[AnnTopics])
	if err != nil {
		return m, fmt.Errorf("annotation %s: %w", AnnTopics, err)
	}
	if len(topics) == 0 {
		return m, fmt.Errorf("annotation %s is empty or missing", AnnTopics)
	}
	m.Topics = topics
	if err := applyValues(&m.Settings, func(k string) (string, bool) {
		v, ok := annotations[k]
		return v, ok
	}, func(k string) string { return "annotation " + k }); err != nil {
		return m, err
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
	return m, nil
}

// UnknownAnnotations lists, sorted, the hottopic.io/* annotations that Hot
// Topic does not know (usually a typo of one it does, which then silently
// keeps its default), each as a one-line warning naming the key.
func UnknownAnnotations(annotations map[string]string) []string {
	known := map[string]bool{AnnTopics: true}
	for _, k := range SettingAnnotations {
		known[k] = true
	}
	var out []string
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) && !known[k] {
			w := "unknown annotation " + k + " is ignored"
			if near := closest(k, known); near != "" {
				w += " (did you mean " + near + "?)"
			}
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// closest is the known key at edit distance 3 or less from k, if any.
func closest(k string, known map[string]bool) string {
	best, bestD := "", 4
	for c := range known {
		if d := editDistance(k, c); d < bestD || d == bestD && c < best {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Env variables of the sidecar's static mode, keyed by the annotation they mirror.
var envByAnnotation = map[string]string{
	AnnPath:        "HOTTOPIC_PATH",
	AnnConcurrency: "HOTTOPIC_CONCURRENCY",
	AnnTimeout:     "HOTTOPIC_TIMEOUT_SECONDS",
	AnnMaxDeliver:  "HOTTOPIC_MAX_DELIVER",
	AnnOutputTopic: "HOTTOPIC_OUTPUT_TOPIC",
	AnnBatchSize:   "HOTTOPIC_BATCH_SIZE",
	AnnBatchWait:   "HOTTOPIC_BATCH_WAIT_MS",
}

// EnvTopics switches the sidecar to static mode.
const EnvTopics = "HOTTOPIC_TOPICS"

// FromEnv resolves a static-mode mapping from HOTTOPIC_TOPICS and the
// HOTTOPIC_* settings. ok is false when HOTTOPIC_TOPICS is unset (mapped mode).
func FromEnv(appGUID, appName string, getenv func(string) string) (m Mapping, ok bool, err error) {
	raw, set := lookup(getenv, EnvTopics)
	if !set {
		return Mapping{}, false, nil
	}
	m = Mapping{AppGUID: appGUID, AppName: appName, Settings: Defaults()}
	topics, err := topic.ParseList(raw)
	if err != nil {
		return m, true, fmt.Errorf("%s: %w", EnvTopics, err)
	}
	if len(topics) == 0 {
		return m, true, fmt.Errorf("%s is set but names no topic", EnvTopics)
	}
	m.Topics = topics
	err = applyValues(&m.Settings, func(k string) (string, bool) {
		env, ok := envByAnnotation[k]
		if !ok {
			return "", false
		}
		return lookup(getenv, env)
	}, func(k string) string { return envByAnnotation[k] })
	if err != nil {
		return m, true, err
	}
	if err := m.Settings.Validate(); err != nil {
		// Name the variable the operator set, not the annotation it mirrors.
		var se *SettingError
		if errors.As(err, &se) && envByAnnotation[se.Annotation] != "" {
			return m, true, fmt.Errorf("%s: %w", envByAnnotation[se.Annotation], err)
		}
		return m, true, err
	}
	if err := m.checkOutputLoop(); err != nil {
		return m, true, fmt.Errorf("HOTTOPIC_OUTPUT_TOPIC: %w", err)
	}
	return m, true, nil
}

func lookup(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

func applyValues(s *Settings, get func(string) (string, bool), name func(string) string) error {
	ints := map[string]*int{
		AnnMin: &s.MinInstances, AnnMax: &s.MaxInstances, AnnLagPer: &s.LagPerInstance,
		AnnIdleSeconds: &s.IdleSeconds, AnnConcurrency: &s.Concurrency,
		AnnTimeout: &s.TimeoutSeconds, AnnMaxDeliver: &s.MaxDeliver,
		AnnBatchSize: &s.BatchSize, AnnBatchWait: &s.BatchWaitMS,
	}
	keys := make([]string, 0, len(ints))
	for k := range ints {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a stable first error
	for _, k := range keys {
		v, ok := get(k)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%s must be a whole number, got %q", name(k), v)
		}
		*ints[k] = n
	}
	if v, ok := get(AnnPath); ok {
		s.Path = strings.TrimSpace(v)
	}
	if v, ok := get(AnnOutputTopic); ok {
		s.OutputTopic = strings.TrimSpace(v)
	}
	return nil
}

// Annotations renders settings as annotation values (all of them), for the
// CLI's PATCH and for manifests.
func (s Settings) Annotations() map[string]string {
	out := map[string]string{
		AnnMin:         strconv.Itoa(s.MinInstances),
		AnnMax:         strconv.Itoa(s.MaxInstances),
		AnnLagPer:      strconv.Itoa(s.LagPerInstance),
		AnnIdleSeconds: strconv.Itoa(s.IdleSeconds),
		AnnConcurrency: strconv.Itoa(s.Concurrency),
		AnnPath:        s.Path,
		AnnTimeout:     strconv.Itoa(s.TimeoutSeconds),
		AnnMaxDeliver:  strconv.Itoa(s.MaxDeliver),
	}
	if s.OutputTopic != "" {
		out[AnnOutputTopic] = s.OutputTopic
	}
	if s.BatchSize > 1 { // batch-size 1 (the default) stays off the app's metadata
		out[AnnBatchSize] = strconv.Itoa(s.BatchSize)
		out[AnnBatchWait] = strconv.Itoa(s.BatchWaitMS)
	}
	return out
}
