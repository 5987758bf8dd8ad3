package scaler

// Who may read the scaler's API (docs/design.md, "The scaler's API"). Access
// is a layer in front of every handler: /healthz and the dashboard's page are
// open; /metrics takes the scrape credential; everything else takes a Cloud
// Foundry bearer token, which a TokenChecker turns into the set of apps the
// token may see (a Viewer, put in the request's context). Whatever renders
// app data (/v1/mappings, the dashboard's data, dead letters) filters by it,
// so the rule holds for whatever produces the status.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Viewer is what one request may see: every app (the owner of a `hottopic
// dev`), or the apps whose GUIDs it holds.
type Viewer struct {
	all  bool
	apps map[string]bool
}

// AllApps sees every app.
func AllApps() Viewer { return Viewer{all: true} }

// OnlyApps sees the apps with these GUIDs.
func OnlyApps(guids ...string) Viewer {
	v := Viewer{apps: make(map[string]bool, len(guids))}
	for _, g := range guids {
		v.apps[g] = true
	}
	return v
}

// Sees reports whether the viewer may see the app.
func (v Viewer) Sees(guid string) bool { return v.all || v.apps[guid] }

type viewerKey struct{}

// WithViewer returns ctx carrying v.
func WithViewer(ctx context.Context, v Viewer) context.Context {
	return context.WithValue(ctx, viewerKey{}, v)
}

// ViewerFrom is the request's viewer. A handler reached without the Access
// layer (Scaler.Handler served directly, in tests) sees every app.
func ViewerFrom(ctx context.Context) Viewer {
	if v, ok := ctx.Value(viewerKey{}).(Viewer); ok {
		return v
	}
	return AllApps()
}

// TokenChecker answers which mapped apps a bearer token may see. Errors
// wrapping ErrTokenRejected become 401, ErrTokenForbidden 403, others 502.
type TokenChecker interface {
	VisibleApps(ctx context.Context, token string) (Viewer, error)
}

var (
	// ErrTokenRejected: Cloud Controller does not take the token (expired, revoked, not one of its tokens).
	ErrTokenRejected = errors.New("Cloud Controller rejected the token (expired or invalid): get a fresh one with cf oauth-token")
	// ErrTokenForbidden: the token is valid but may not read Cloud Controller (no cloud_controller.read scope).
	ErrTokenForbidden = errors.New("the token may not read Cloud Controller (it lacks the cloud_controller.read scope)")
)

// Access decides who may read the API. The zero value refuses every data
// request and every scrape: a deployment must say how callers prove who
// they are.
type Access struct {
	// Tokens checks the bearer tokens of data requests; nil refuses them.
	Tokens TokenChecker
	// ScrapeUser and ScrapePassword are the HTTP basic credentials
	// GET /metrics takes; empty: /metrics is refused.
	ScrapeUser, ScrapePassword string
	// owner: no credentials at all (hottopic dev, loopback only).
	owner bool
}

// OwnerAccess is the API of a `hottopic dev`: the person at the keyboard owns
// it, so nothing needs a token. Listen refuses it on a non-loopback address.
func OwnerAccess() Access { return Access{owner: true} }

// Environment variables of the scrape credential.
const (
	EnvMetricsUser     = "HOTTOPIC_METRICS_USERNAME"
	EnvMetricsPassword = "HOTTOPIC_METRICS_PASSWORD"
)

// ScrapeFromEnv reads the scrape credential: both variables or neither.
func ScrapeFromEnv(getenv func(string) string) (user, password string, err error) {
	user, password = strings.TrimSpace(getenv(EnvMetricsUser)), getenv(EnvMetricsPassword)
	switch {
	case user == "" && password == "":
		return "", "", nil
	case user == "":
		return "", "", fmt.Errorf("%s is set but %s is not: /metrics takes both (HTTP basic auth)", EnvMetricsPassword, EnvMetricsUser)
	case password == "":
		return "", "", fmt.Errorf("%s is set but %s is not: /metrics takes both (HTTP basic auth)", EnvMetricsUser, EnvMetricsPassword)
	}
	return user, password, nil
}

// checkAddr refuses an owner API that others could reach.
func (a Access) checkAddr(addr net.Addr) error {
	if !a.owner {
		return nil
	}
	if t, ok := addr.(*net.TCPAddr); !ok || !t.IP.IsLoopback() {
		return fmt.Errorf("scaler API: without authentication it listens on a loopback address only, not %s", addr)
	}
	return nil
}

// Protect puts the access rules in front of h.
func (a Access) Protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.owner:
			h.ServeHTTP(w, r.WithContext(WithViewer(r.Context(), AllApps())))
		case r.URL.Path == "/healthz" || r.URL.Path == "/":
			// Health without details says nothing about apps; the page holds no data.
			h.ServeHTTP(w, r.WithContext(WithViewer(r.Context(), Viewer{})))
		case r.URL.Path == "/metrics":
			if err := a.scrape(r); err != nil {
				w.Header().Set("WWW-Authenticate", `Basic realm="hottopic-scaler metrics"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
				return
			}
			h.ServeHTTP(w, r)
		default:
			v, code, err := a.viewer(r)
			if err != nil {
				if code == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="hottopic-scaler"`)
				}
				writeJSON(w, code, map[string]string{"error": err.Error()})
				return
			}
			h.ServeHTTP(w, r.WithContext(WithViewer(r.Context(), v)))
		}
	})
}

func (a Access) scrape(r *http.Request) error {
	if a.ScrapeUser == "" {
		return fmt.Errorf("/metrics is off: the scaler has no scrape credential (set %s and %s)", EnvMetricsUser, EnvMetricsPassword)
	}
	u, p, ok := r.BasicAuth()
	if !ok {
		return errors.New("/metrics needs the scrape credential (HTTP basic auth)")
	}
	// Compare digests: constant time, whatever the lengths.
	uh, ph := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
	wu, wp := sha256.Sum256([]byte(a.ScrapeUser)), sha256.Sum256([]byte(a.ScrapePassword))
	if subtle.ConstantTimeCompare(uh[:], wu[:])&subtle.ConstantTimeCompare(ph[:], wp[:]) != 1 {
		return errors.New("/metrics: wrong scrape credential")
	}
	return nil
}

func (a Access) viewer(r *http.Request) (Viewer, int, error) {
	tok, ok := BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return Viewer{}, http.StatusUnauthorized, errors.New("no token: send Authorization: bearer TOKEN, a Cloud Foundry token (cf oauth-token prints one)")
	}
	if a.Tokens == nil {
		return Viewer{}, http.StatusUnauthorized, errors.New("this scaler checks no tokens: its API serves no data")
	}
	v, err := a.Tokens.VisibleApps(r.Context(), tok)
	switch {
	case err == nil:
		return v, 0, nil
	case errors.Is(err, ErrTokenRejected):
		return Viewer{}, http.StatusUnauthorized, ErrTokenRejected
	case errors.Is(err, ErrTokenForbidden):
		return Viewer{}, http.StatusForbidden, ErrTokenForbidden
	case r.Context().Err() != nil:
		return Viewer{}, http.StatusServiceUnavailable, errors.New("request ended while the token was checked")
	default:
		return Viewer{}, http.StatusBadGateway, fmt.Errorf("cannot check the token: %v", err)
	}
}

// BearerToken is the token of an Authorization header "bearer TOKEN" (any
// case), without the scheme.
func BearerToken(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "bearer") || tok == "" {
		return "", false
	}
	return tok, true
}
