package scaler

// The operations on an app's events (docs/design.md, "The scaler's API"):
// its dead letters (list, show, redrive, purge) and replay, run with the
// scaler's own credentials in the app's bus, so a Cloud Foundry user needs
// nothing but the cf login. Reading takes a token that sees the app; the
// writes also take Cloud Controller's word that the token may change it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/topic"
)

const (
	opsTimeout     = 30 * time.Second // reading or writing letters, replaying
	defaultWait    = time.Minute      // how long a redrive waits for the app, unless told
	maxRedriveWait = 10 * time.Minute
	maxOpsBody     = 8 << 20 // a purge names every letter it deletes
)

// Letter is one dead letter whole, as GET /v1/apps/{guid}/dead-letters/{id}
// answers: its payload in "data" (base64).
type Letter struct {
	ops.Letter
	Data []byte `json:"data"`
}

// RedriveRequest is the body of POST /v1/apps/{guid}/redrive.
type RedriveRequest struct {
	Topic string   `json:"topic,omitempty"`
	IDs   []uint64 `json:"ids,omitempty"`
	Limit int      `json:"limit,omitempty"`
	Wait  string   `json:"wait,omitempty"` // a duration; default 1m
}

// RedriveResult is its answer: Selected letters were sent, with the outcome.
type RedriveResult struct {
	Selected int `json:"selected"`
	ops.Outcome
}

// ReplayRequest is the body of POST /v1/apps/{guid}/replay (RFC 3339 times).
type ReplayRequest struct {
	Topic string    `json:"topic"`
	Since time.Time `json:"since"`
	Until time.Time `json:"until,omitzero"`
}

// PurgeRequest is the body of DELETE /v1/apps/{guid}/dead-letters (none: all).
type PurgeRequest struct {
	Topic     string   `json:"topic,omitempty"`
	OlderThan string   `json:"older_than,omitempty"` // a duration
	IDs       []uint64 `json:"ids,omitempty"`        // only these (those a user was asked about)
}

// PurgeResult is its answer.
type PurgeResult struct {
	Deleted int `json:"deleted"`
}

// appTarget is an app's bus, as the operations see it.
type appTarget struct {
	sc   *Scaler
	guid string
	name string
}

// busOf is the bus (Scaler) serving the app.
func (s *Scaler) busOf(string) (*Scaler, error) { return s, nil }

func (f *fleet) busOf(appGUID string) (*Scaler, error) {
	for _, r := range f.scalers() {
		if r.sc.serves(appGUID) {
			return r.sc, nil
		}
	}
	return nil, fmt.Errorf("app %s is not mapped in any bus", appGUID)
}

func opsRoutes(mux *http.ServeMux, s source) {
	mux.HandleFunc("GET /v1/apps/{guid}/dead-letters", func(w http.ResponseWriter, r *http.Request) {
		a, ok := opsApp(w, r, s, false)
		if !ok {
			return
		}
		t := r.URL.Query().Get("topic")
		if t != "" {
			if err := topic.Validate(t); err != nil {
				opsError(w, http.StatusBadRequest, fmt.Errorf("topic: %v", err))
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), opsTimeout)
		defer cancel()
		letters, err := ops.List(ctx, a.sc.js, ops.Filter{App: a.guid, Topic: t})
		if err != nil {
			opsError(w, http.StatusBadGateway, err)
			return
		}
		for i := range letters {
			letters[i].AppName = a.name
		}
		writeJSON(w, http.StatusOK, map[string]any{"app_guid": a.guid, "app": a.name, "dead_letters": letters})
	})
	mux.HandleFunc("GET /v1/apps/{guid}/dead-letters/{id}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := opsApp(w, r, s, false)
		if !ok {
			return
		}
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil || id == 0 {
			opsError(w, http.StatusBadRequest, fmt.Errorf("id %q: want a whole number from 1", r.PathValue("id")))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), opsTimeout)
		defer cancel()
		l, err := ops.GetOf(ctx, a.sc.js, a.guid, a.name, id)
		if err != nil {
			opsError(w, opsStatus(err), err)
			return
		}
		l.AppName = a.name
		writeJSON(w, http.StatusOK, Letter{Letter: l, Data: l.Data})
	})
	mux.HandleFunc("POST /v1/apps/{guid}/redrive", func(w http.ResponseWriter, r *http.Request) {
		var req RedriveRequest
		if !readBody(w, r, &req) {
			return
		}
		wait := defaultWait
		switch err := checkTopic(req.Topic); {
		case err != nil:
			opsError(w, http.StatusBadRequest, err)
			return
		case req.Limit < 0:
			opsError(w, http.StatusBadRequest, fmt.Errorf("limit must be 0 (all) or more, got %d", req.Limit))
			return
		case req.Wait != "":
			d, err := time.ParseDuration(req.Wait)
			if err != nil || d <= 0 || d > maxRedriveWait {
				opsError(w, http.StatusBadRequest, fmt.Errorf("wait %q: want a positive duration up to %s", req.Wait, maxRedriveWait))
				return
			}
			wait = d
		}
		for _, id := range req.IDs {
			if id == 0 {
				opsError(w, http.StatusBadRequest, errors.New("ids: dead letter IDs start at 1"))
				return
			}
		}
		a, ok := opsApp(w, r, s, true)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), opsTimeout+wait)
		defer cancel()
		m, letters, err := ops.SelectRedrive(ctx, a.sc.js, a.guid, a.name, req.Topic, req.IDs, req.Limit)
		if err != nil {
			opsError(w, opsStatus(err), err)
			return
		}
		res := RedriveResult{Selected: len(letters), Outcome: ops.Outcome{Failures: []ops.Failure{}}}
		if len(letters) > 0 {
			if res.Outcome, err = ops.Redrive(ctx, a.sc.js, m, letters, a.sc.o.streams, wait); err != nil {
				opsError(w, http.StatusBadGateway, err)
				return
			}
		}
		a.sc.log.Info("dead letters redriven through the API", slog.String("app", a.name), slog.String("app_guid", a.guid),
			slog.Int("selected", res.Selected), slog.Int("redriven", res.Redriven), slog.Int("failed", res.Failed))
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/apps/{guid}/replay", func(w http.ResponseWriter, r *http.Request) {
		var req ReplayRequest
		if !readBody(w, r, &req) {
			return
		}
		switch {
		case req.Topic == "":
			opsError(w, http.StatusBadRequest, errors.New("topic is required: the topic whose events to replay"))
			return
		case checkTopic(req.Topic) != nil:
			opsError(w, http.StatusBadRequest, checkTopic(req.Topic))
			return
		case req.Since.IsZero():
			opsError(w, http.StatusBadRequest, errors.New("since is required: the start of the window (RFC 3339)"))
			return
		case !req.Until.IsZero() && !req.Until.After(req.Since):
			opsError(w, http.StatusBadRequest, errors.New("until must be after since"))
			return
		}
		a, ok := opsApp(w, r, s, true)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), opsTimeout)
		defer cancel()
		res, err := ops.ReplayTo(ctx, a.sc.js, a.guid, a.name, req.Topic, req.Since, req.Until, a.sc.o.streams)
		if err != nil {
			opsError(w, opsStatus(err), err)
			return
		}
		a.sc.log.Info("events replayed through the API", slog.String("app", a.name), slog.String("app_guid", a.guid),
			slog.String("topic", req.Topic), slog.Int("events", res.Events))
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("DELETE /v1/apps/{guid}/dead-letters", func(w http.ResponseWriter, r *http.Request) {
		var req PurgeRequest
		if !readBody(w, r, &req) {
			return
		}
		f := ops.Filter{Topic: req.Topic, IDs: req.IDs}
		if err := checkTopic(req.Topic); err != nil {
			opsError(w, http.StatusBadRequest, err)
			return
		}
		if req.OlderThan != "" {
			d, err := time.ParseDuration(req.OlderThan)
			if err != nil || d < 0 {
				opsError(w, http.StatusBadRequest, fmt.Errorf("older_than %q: want a duration (72h), not negative", req.OlderThan))
				return
			}
			f.OlderThan = time.Now().Add(-d)
		}
		a, ok := opsApp(w, r, s, true)
		if !ok {
			return
		}
		f.App = a.guid
		ctx, cancel := context.WithTimeout(r.Context(), opsTimeout)
		defer cancel()
		letters, err := ops.List(ctx, a.sc.js, f)
		if err != nil {
			opsError(w, http.StatusBadGateway, err)
			return
		}
		n, err := ops.Purge(ctx, a.sc.js, letters)
		if err != nil {
			opsError(w, http.StatusBadGateway, err)
			return
		}
		a.sc.log.Info("dead letters purged through the API", slog.String("app", a.name), slog.String("app_guid", a.guid), slog.Int("deleted", n))
		writeJSON(w, http.StatusOK, PurgeResult{Deleted: n})
	})
}

// opsApp finds the request's app: one the caller may see (else 404), in a
// bus this scaler serves (else 404), and for a write one the caller may
// change (else 403). It answers the request itself when not ok.
func opsApp(w http.ResponseWriter, r *http.Request, s source, write bool) (appTarget, bool) {
	guid := r.PathValue("guid")
	v := ViewerFrom(r.Context())
	if !v.Sees(guid) {
		opsError(w, http.StatusNotFound, fmt.Errorf("app %s is not a mapped app your token may see", guid))
		return appTarget{}, false
	}
	sc, err := s.busOf(guid)
	if err != nil {
		opsError(w, http.StatusNotFound, err)
		return appTarget{}, false
	}
	if write {
		ctx, cancel := context.WithTimeout(r.Context(), opsTimeout)
		err := v.MayChange(ctx, guid)
		cancel()
		switch {
		case errors.Is(err, ErrNotAuthorized):
			opsError(w, http.StatusForbidden, err)
			return appTarget{}, false
		case errors.Is(err, ErrTokenRejected):
			opsError(w, http.StatusUnauthorized, err)
			return appTarget{}, false
		case err != nil:
			opsError(w, http.StatusBadGateway, fmt.Errorf("cannot check whether you may change app %s: %v", guid, err))
			return appTarget{}, false
		}
	}
	return appTarget{sc: sc, guid: guid, name: sc.appName(guid)}, true
}

// appName is the app's name as the platform reported it, or its GUID.
func (s *Scaler) appName(guid string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.apps[guid]; st != nil && st.app.Name != "" {
		return st.app.Name
	}
	return guid
}

// opsStatus is the HTTP status of an operation's refusal.
func opsStatus(err error) int {
	switch {
	case errors.Is(err, ops.ErrNoLetter):
		return http.StatusNotFound
	case errors.Is(err, ops.ErrNotMapped):
		return http.StatusConflict
	case errors.Is(err, ops.ErrOutsideWindow), errors.Is(err, ops.ErrNoArchive), strings.Contains(err.Error(), "is not mapped to topic"):
		return http.StatusUnprocessableEntity
	}
	return http.StatusBadGateway
}

func checkTopic(t string) error {
	if t == "" {
		return nil
	}
	if err := topic.Validate(t); err != nil {
		return fmt.Errorf("topic: %v", err)
	}
	return nil
}

// readBody decodes a JSON body (an empty one is the zero request), naming
// the field that is wrong. The writes take only Content-Type
// application/json: a browser cannot send that cross-site without asking
// first, so a web page cannot drive the token-less API of a `hottopic dev`.
func readBody(w http.ResponseWriter, r *http.Request, into any) bool {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		opsError(w, http.StatusUnsupportedMediaType, errors.New("Content-Type: want application/json"))
		return false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxOpsBody+1))
	if err != nil {
		opsError(w, http.StatusBadRequest, fmt.Errorf("body: %v", err))
		return false
	}
	if len(b) > maxOpsBody {
		opsError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("body: more than %d bytes", maxOpsBody))
		return false
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return true
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		var te *json.UnmarshalTypeError
		var pe *time.ParseError
		switch {
		case errors.As(err, &te):
			err = fmt.Errorf("%s: want %s, got a JSON %s", te.Field, te.Type, te.Value)
		case errors.As(err, &pe):
			err = fmt.Errorf("a time %q: want RFC 3339 (2026-12-01T09:30:00Z)", pe.Value)
		default:
			err = fmt.Errorf("body: %v", err)
		}
		opsError(w, http.StatusBadRequest, err)
		return false
	}
	return true
}

// opsError answers one line of JSON: {"error": "…"}.
func opsError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": strings.Join(strings.Fields(err.Error()), " ")})
}
