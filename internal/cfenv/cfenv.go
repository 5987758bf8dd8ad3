// Package cfenv reads the Cloud Foundry environment of an app instance:
// VCAP_APPLICATION (who am I), VCAP_SERVICES (what is bound to me), and from
// them Hot Topic's NATS server (nats.go), through which the sidecar, the
// scaler and the CLI all connect.
package cfenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Getenv looks up an environment variable; os.Getenv fits, and tests pass maps.
type Getenv func(string) string

// Application is the part of VCAP_APPLICATION Hot Topic uses.
type Application struct {
	ID            string `json:"application_id"`
	Name          string `json:"application_name"`
	SpaceName     string `json:"space_name"`
	SpaceID       string `json:"space_id"`
	OrgName       string `json:"organization_name"`
	CFAPI         string `json:"cf_api"`
	InstanceIndex int    `json:"instance_index"`
}

// App parses VCAP_APPLICATION. An absent variable yields a zero Application and
// no error (local runs); a malformed one is an error. CNB apps get no
// instance_index in VCAP_APPLICATION, so CF_INSTANCE_INDEX fills it.
func App(getenv Getenv) (Application, error) {
	var app Application
	raw := strings.TrimSpace(getenv("VCAP_APPLICATION"))
	if raw != "" {
		var v struct {
			Application
			AltName string `json:"name"`
		}
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return app, fmt.Errorf("VCAP_APPLICATION must be a JSON object of the app's details: %s", jsonReason(err))
			}
			return app, fmt.Errorf("VCAP_APPLICATION is not valid JSON: %s", jsonReason(err))
		}
		app = v.Application
		if app.Name == "" {
			app.Name = v.AltName
		}
	}
	if idx := strings.TrimSpace(getenv("CF_INSTANCE_INDEX")); idx != "" {
		n, err := strconv.Atoi(idx)
		if err != nil || n < 0 {
			return app, fmt.Errorf("CF_INSTANCE_INDEX must be a non-negative integer, got %q", idx)
		}
		app.InstanceIndex = n
	}
	return app, nil
}

// Service is one bound service instance from VCAP_SERVICES.
type Service struct {
	Name         string                     `json:"name"`
	InstanceName string                     `json:"instance_name"`
	Label        string                     `json:"label"`
	Tags         []string                   `json:"tags"`
	Credentials  map[string]json.RawMessage `json:"credentials"`
}

// HasTag reports whether the service carries tag (case-insensitive).
func (s Service) HasTag(tag string) bool {
	for _, t := range s.Tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// Credential returns credential key as a string: JSON strings are unquoted,
// arrays of strings are joined with commas, other values are returned as JSON.
func (s Service) Credential(key string) (string, error) {
	raw, ok := s.Credentials[key]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err == nil {
		return str, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return strings.Join(list, ","), nil
	}
	return "", fmt.Errorf("credential %q of service %q must be a string", key, s.Name)
}

// Services parses VCAP_SERVICES into a flat list, in a stable order (by label,
// then position). An absent variable yields no services and no error.
func Services(getenv Getenv) ([]Service, error) {
	raw := strings.TrimSpace(getenv("VCAP_SERVICES"))
	if raw == "" {
		return nil, nil
	}
	var byLabel map[string][]Service
	if err := json.Unmarshal([]byte(raw), &byLabel); err != nil {
		return nil, fmt.Errorf("VCAP_SERVICES is not valid JSON (an object of service labels to arrays of bindings): %s", jsonReason(err))
	}
	labels := make([]string, 0, len(byLabel))
	for l := range byLabel {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	var out []Service
	for _, l := range labels {
		for _, s := range byLabel[l] {
			if s.Label == "" {
				s.Label = l
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// FindNATS picks the NATS service: the first instance tagged "hottopic", else
// the first tagged "nats". ok is false when neither is bound.
func FindNATS(services []Service) (svc Service, ok bool) {
	for _, tag := range []string{"hottopic", "nats"} {
		for _, s := range services {
			if s.HasTag(tag) {
				return s, true
			}
		}
	}
	return Service{}, false
}

// jsonReason keeps JSON errors short and free of the input (which may hold
// credentials).
func jsonReason(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("syntax error at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		if e.Field != "" {
			// Drop the Go names of embedded structs ("Application.").
			field := e.Field
			if i := strings.LastIndexByte(field, '.'); i >= 0 && field[:1] == strings.ToUpper(field[:1]) {
				field = field[i+1:]
			}
			return fmt.Sprintf("field %q should be %s, not %s", field, jsonKind(e.Type), jsonArticle(e.Value))
		}
		return fmt.Sprintf("expected %s, found %s", jsonKind(e.Type), jsonArticle(e.Value))
	}
	return "cannot be parsed"
}

// jsonKind names a Go type as the JSON it decodes from ("an object", not
// "cfenv.Application"), for people who write JSON.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another value"
}

func jsonArticle(v string) string {
	switch v {
	case "array", "object":
		return "an " + v
	case "string", "number", "bool":
		return "a " + v
	}
	return v
}
