package ccdouble

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault makes matching requests fail instead of being handled.
type Fault struct {
	// Method matches the request method; "" matches any.
	Method string
	// PathPrefix matches the start of the request path ("/v3/apps",
	// "/uaa/oauth/token"); "" matches any.
	PathPrefix string
	// Times is how many matching requests fail; 0 means 1, negative means
	// until ClearFaults.
	Times int
	// Status is the HTTP status (500, 502, 503, 429, ...).
	Status int
	// Code, Title and Detail fill the CC error envelope; zero values get the
	// real ones for Status (429 → 10013 CF-RateLimitExceeded, 503 → 10015
	// CF-ServiceUnavailable, 500 → 10001 UnknownError, ...).
	Code          int
	Title, Detail string
	// RetryAfter sets the Retry-After header (whole seconds); a 429 without
	// it gets "1".
	RetryAfter time.Duration
	// Drop closes the connection without answering (Status is ignored).
	Drop bool
}

// FailNext queues a fault; queued faults are matched in order.
func (c *CC) FailNext(f Fault) {
	if f.Times == 0 {
		f.Times = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = append(c.faults, &f)
}

// ClearFaults drops every queued fault.
func (c *CC) ClearFaults() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = nil
}

// PendingFaults is how many more requests queued faults will fail (a
// negative Times counts as one).
func (c *CC) PendingFaults() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.faults {
		n += max(f.Times, 1)
	}
	return n
}

// applyFault answers r with the first matching fault (or the unavailable
// state) and reports whether it did.
func (c *CC) applyFault(w http.ResponseWriter, r *http.Request) bool {
	c.mu.Lock()
	var f *Fault
	if c.unavailable {
		f = &Fault{Status: http.StatusServiceUnavailable}
	} else {
		for i, cand := range c.faults {
			if (cand.Method == "" || strings.EqualFold(cand.Method, r.Method)) && strings.HasPrefix(r.URL.Path, cand.PathPrefix) {
				f = cand
				if cand.Times > 0 {
					cand.Times--
					if cand.Times == 0 {
						c.faults = append(c.faults[:i:i], c.faults[i+1:]...)
					}
				}
				break
			}
		}
	}
	c.mu.Unlock()
	if f == nil {
		return false
	}
	if f.Drop {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			if rec, ok := w.(*statusRecorder); ok {
				rec.dropped = conn // closed after the call is recorded
			} else {
				_ = conn.Close()
			}
			return true
		}
		f = &Fault{Status: http.StatusBadGateway}
	}
	e := defaultError(f.Status)
	e.Status = f.Status
	if f.Code != 0 {
		e.Code = f.Code
	}
	if f.Title != "" {
		e.Title = f.Title
	}
	if f.Detail != "" {
		e.Detail = f.Detail
	}
	switch {
	case f.RetryAfter > 0:
		w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
	case f.Status == http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
	}
	if strings.HasPrefix(r.URL.Path, "/uaa/") {
		writeUAAError(w, e.Status, strings.ToLower(strings.TrimPrefix(e.Title, "CF-")), e.Detail)
		return true
	}
	writeCCError(w, e)
	return true
}
