package ccdouble

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Call is one request the double received, in arrival order of completion.
type Call struct {
	Method   string
	Path     string
	RawQuery string
	Header   http.Header
	// Body is the request body; client_secret, password and refresh_token
	// values of UAA form bodies are replaced by "REDACTED".
	Body []byte
	// Subject is the client_id or user_name of the bearer token (also of an
	// expired one), or the client of a token request; "" when none.
	Subject string
	// Status is the response status; 0 when the connection was dropped.
	Status int
	Time   time.Time
}

// Query parses RawQuery.
func (c Call) Query() url.Values {
	q, _ := url.ParseQuery(c.RawQuery)
	return q
}

// Form parses a form-encoded Body (UAA token requests).
func (c Call) Form() url.Values {
	f, _ := url.ParseQuery(string(c.Body))
	return f
}

// ScaleCall is a scale request for one app, with its decoded body.
type ScaleCall struct {
	Call
	ProcessType string
	// Instances is the instances field of the body, nil when absent.
	Instances *int
}

// Calls returns every call so far.
func (c *CC) Calls() []Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Call(nil), c.calls...)
}

// CallsTo returns the calls with the method ("" for any) whose path starts
// with pathPrefix.
func (c *CC) CallsTo(method, pathPrefix string) []Call {
	var out []Call
	for _, call := range c.Calls() {
		if (method == "" || strings.EqualFold(method, call.Method)) && strings.HasPrefix(call.Path, pathPrefix) {
			out = append(out, call)
		}
	}
	return out
}

// ScaleCalls returns the scale requests (both endpoints, any outcome) for an
// app's processes.
func (c *CC) ScaleCalls(appGUID string) []ScaleCall {
	c.mu.Lock()
	calls := append([]Call(nil), c.calls...)
	owners := map[string]string{} // process GUID → type, for this app
	for guid, p := range c.processes {
		if p.appGUID == appGUID {
			owners[guid] = p.ptype
		}
	}
	c.mu.Unlock()
	var out []ScaleCall
	for _, call := range calls {
		if call.Method != http.MethodPost {
			continue
		}
		parts := strings.Split(strings.Trim(call.Path, "/"), "/")
		var ptype string
		switch {
		case len(parts) == 7 && parts[1] == "apps" && parts[2] == appGUID && parts[3] == "processes" && parts[5] == "actions" && parts[6] == "scale":
			ptype = parts[4]
		case len(parts) == 5 && parts[1] == "processes" && parts[3] == "actions" && parts[4] == "scale" && owners[parts[2]] != "":
			ptype = owners[parts[2]]
		default:
			continue
		}
		sc := ScaleCall{Call: call, ProcessType: ptype}
		var body struct {
			Instances *int `json:"instances"`
		}
		if json.Unmarshal(call.Body, &body) == nil {
			sc.Instances = body.Instances
		}
		out = append(out, sc)
	}
	return out
}

// ResetCalls forgets the calls recorded so far.
func (c *CC) ResetCalls() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = nil
}

// OnRequest registers a hook run before each request is handled, outside
// the double's lock: it may block to hold the request (Status is 0).
func (c *CC) OnRequest(h func(Call)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onRequest = append(c.onRequest, h)
}

// OnCall registers an observer run after each request with its status.
func (c *CC) OnCall(h func(Call)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onCall = append(c.onCall, h)
}

func redactBody(path string, body []byte) []byte {
	if !strings.HasPrefix(path, "/uaa/") || len(body) == 0 {
		return body
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return body
	}
	for _, k := range []string{"client_secret", "password", "refresh_token", "client_assertion", "assertion"} {
		if form.Has(k) {
			form.Set(k, "REDACTED")
		}
	}
	return []byte(form.Encode())
}
