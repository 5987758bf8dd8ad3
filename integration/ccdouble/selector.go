package ccdouble

import (
	"regexp"
	"slices"
	"strings"
)

type selectorOp int

const (
	opIn selectorOp = iota
	opNotIn
	opEqual
	opNotEqual
	opExists
	opNotExists
)

type requirement struct {
	key    string
	op     selectorOp
	values []string
}

// The grammar of cloud_controller_ng LabelHelpers: requirements split on
// commas outside parentheses, then matched in this order.
var (
	reqSplitter = regexp.MustCompile(`(?:\(.*?\)|[^,])+`)
	inRe        = regexp.MustCompile(`^(.*) in \((.*)\)$`)
	notInRe     = regexp.MustCompile(`^(.*) notin \((.*)\)$`)
	equalRe     = regexp.MustCompile(`^([\w\-./]*)(?:==|=)([\w\-.]*)$`)
	notEqualRe  = regexp.MustCompile(`^([\w\-./]*)!=([\w\-.]*)$`)
	existsRe    = regexp.MustCompile(`^([\w\-./]+)$`)
	notExistsRe = regexp.MustCompile(`^!([\w\-./]+)$`)
)

// parseSelector parses a label_selector; the error text is the CC detail.
func parseSelector(s string) ([]requirement, string) {
	parts := reqSplitter.FindAllString(s, -1)
	if len(parts) == 0 {
		return nil, "Missing label_selector value"
	}
	reqs := make([]requirement, 0, len(parts))
	for _, p := range parts {
		var r requirement
		if m := inRe.FindStringSubmatch(p); m != nil {
			r = requirement{m[1], opIn, strings.Split(m[2], ",")}
		} else if m := notInRe.FindStringSubmatch(p); m != nil {
			r = requirement{m[1], opNotIn, strings.Split(m[2], ",")}
		} else if m := equalRe.FindStringSubmatch(p); m != nil && !strings.HasPrefix(p, "=") {
			r = requirement{m[1], opEqual, []string{m[2]}}
		} else if m := notEqualRe.FindStringSubmatch(p); m != nil {
			r = requirement{m[1], opNotEqual, []string{m[2]}}
		} else if m := notExistsRe.FindStringSubmatch(p); m != nil {
			r = requirement{m[1], opNotExists, nil}
		} else if m := existsRe.FindStringSubmatch(p); m != nil {
			r = requirement{m[1], opExists, nil}
		} else {
			return nil, "Invalid label_selector value"
		}
		if msg := keyError(r.key); msg != "" {
			return nil, msg
		}
		for _, v := range r.values {
			if msg := labelValueError(v); msg != "" {
				return nil, msg
			}
		}
		reqs = append(reqs, r)
	}
	return reqs, ""
}

// matches reports whether labels satisfy every requirement (they are ANDed).
func matches(reqs []requirement, labels map[string]string) bool {
	for _, r := range reqs {
		v, ok := labels[r.key]
		var hit bool
		switch r.op {
		case opIn, opEqual:
			hit = ok && slices.Contains(r.values, v)
		case opNotIn, opNotEqual:
			hit = !ok || !slices.Contains(r.values, v)
		case opExists:
			hit = ok
		case opNotExists:
			hit = !ok
		}
		if !hit {
			return false
		}
	}
	return true
}
