package ccdouble

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Rules of cloud_controller_ng app/messages/metadata_validator_helper.rb and
// validators/metadata_validator.rb.
const (
	maxNameSize       = 63
	maxPrefixSize     = 253
	maxAnnotationSize = 5000
)

var (
	invalidChars   = regexp.MustCompile(`[^\w\-.]`)
	alnumStartEnd  = regexp.MustCompile(`^[a-zA-Z0-9](.*[a-zA-Z0-9])?$`)
	dnsSubdomainRe = regexp.MustCompile(`^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])\.)*([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])$`)
)

func splitKey(key string) (prefix, name string, hasPrefix bool) {
	prefix, name, hasPrefix = strings.Cut(key, "/")
	if !hasPrefix {
		return "", key, false
	}
	return prefix, name, true
}

// keyError returns what is wrong with a label or annotation key, or "".
func keyError(key string) string {
	if strings.TrimSpace(key) == "" {
		return "key cannot be empty string"
	}
	if strings.Count(key, "/") > 1 {
		return "key has more than one '/'"
	}
	prefix, name, hasPrefix := splitKey(key)
	if hasPrefix {
		if !dnsSubdomainRe.MatchString(prefix) {
			return fmt.Sprintf("prefix '%s' must be in valid dns format", prefix)
		}
		if len(prefix) > maxPrefixSize {
			return fmt.Sprintf("prefix '%s...' is greater than %d characters", truncate(prefix), maxPrefixSize)
		}
		if strings.EqualFold(prefix, "cloudfoundry.org") {
			return "prefix 'cloudfoundry.org' is reserved"
		}
	}
	if strings.TrimSpace(name) == "" {
		return "key cannot be empty string"
	}
	return syntaxError(name)
}

// labelValueError returns what is wrong with a label value, or "".
func labelValueError(value string) string {
	if value == "" {
		return ""
	}
	return syntaxError(value)
}

func syntaxError(s string) string {
	switch {
	case invalidChars.MatchString(s):
		return fmt.Sprintf("'%s' contains invalid characters", s)
	case !alnumStartEnd.MatchString(s):
		return fmt.Sprintf("'%s' starts or ends with invalid characters", s)
	case len(s) > maxNameSize:
		return fmt.Sprintf("'%s...' is greater than %d characters", truncate(s), maxNameSize)
	}
	return ""
}

func truncate(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

// validateMetadata checks a metadata request object the way CC does and
// returns the changes it asks for: a nil value deletes the key.
func validateMetadata(raw any) (labels, annotations map[string]*string, problems []string) {
	md, ok := raw.(map[string]any)
	if !ok {
		return nil, nil, []string{"Metadata must be an object"}
	}
	var unexpected []string
	for k := range md {
		if k != "labels" && k != "annotations" {
			unexpected = append(unexpected, "'"+k+"'")
		}
	}
	if len(unexpected) > 0 {
		problems = append(problems, "Metadata has unexpected field(s): "+strings.Join(unexpected, " "))
	}
	labels, p := validateKind(md["labels"], "label", labelValueError)
	problems = append(problems, p...)
	annotations, p = validateKind(md["annotations"], "annotation", func(v string) string {
		if utf8.RuneCountInString(v) > maxAnnotationSize {
			return fmt.Sprintf("annotation '%s...' is greater than %d characters", truncate(v), maxAnnotationSize)
		}
		return ""
	})
	problems = append(problems, p...)
	return labels, annotations, problems
}

func validateKind(raw any, kind string, valueError func(string) string) (map[string]*string, []string) {
	if raw == nil {
		return nil, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, []string{fmt.Sprintf("Metadata '%ss' is not an object", kind)}
	}
	out := make(map[string]*string, len(m))
	var problems []string
	for k, v := range m {
		if msg := keyError(k); msg != "" {
			problems = append(problems, fmt.Sprintf("Metadata %s key error: %s", kind, msg))
			continue
		}
		switch v := v.(type) {
		case nil:
			out[k] = nil
		case string:
			if msg := valueError(v); msg != "" {
				problems = append(problems, fmt.Sprintf("Metadata %s value error: %s", kind, msg))
				continue
			}
			out[k] = &v
		default:
			problems = append(problems, fmt.Sprintf("Metadata %s value error: value of '%s' must be a string", kind, k))
		}
	}
	return out, problems
}
