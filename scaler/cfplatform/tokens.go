package cfplatform

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler"
)

// Token checks, as docs/design.md states them.
const (
	// TokenCacheTTL is how long one token's answer is kept (never past the
	// token's own expiry): a dashboard polling every second costs Cloud
	// Controller one call per token per TokenCacheTTL.
	TokenCacheTTL = 30 * time.Second
	// maxCachedTokens bounds the cache; the answers closest to expiry go first.
	maxCachedTokens = 1024
	// tokenChecksAtOnce bounds the calls to CC, so a flood of made-up tokens
	// cannot turn the scaler into a load generator against CC.
	tokenChecksAtOnce = 4
)

// Tokens is the scaler.TokenChecker of Cloud Foundry: a token may see the
// mapped apps Cloud Controller lists for it (GET /v3/apps with the label
// selector hottopic.io/mapped=true, sent with the caller's own token, so CC's
// roles decide). Safe for concurrent use. Tokens are never logged or kept:
// the cache is keyed by their SHA-256.
type Tokens struct {
	api      string
	hc       *http.Client
	ttl      time.Duration
	pageSize int
	sem      chan struct{}
	now      func() time.Time

	mu       sync.Mutex
	cache    map[[32]byte]tokenAnswer
	inflight map[[32]byte]*tokenCall
}

type tokenAnswer struct {
	v     scaler.Viewer
	err   error
	until time.Time
}

type tokenCall struct {
	done chan struct{}
	tokenAnswer
}

var _ scaler.TokenChecker = (*Tokens)(nil)

// NewTokens checks tokens against the Cloud Controller of cfg (API,
// SkipSSLValidation and HTTPClient are used; the client credentials are not).
func NewTokens(cfg Config) *Tokens {
	var hc *http.Client
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: cfg.SkipSSLValidation} //nolint:gosec // operator's explicit choice (labs)
		hc = &http.Client{Transport: t}
	}
	hc.Timeout = 10 * time.Second
	// A redirect would carry the caller's token elsewhere.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Tokens{
		api: strings.TrimRight(cfg.API, "/"), hc: hc, ttl: TokenCacheTTL, pageSize: 5000,
		sem: make(chan struct{}, tokenChecksAtOnce), now: time.Now,
		cache: map[[32]byte]tokenAnswer{}, inflight: map[[32]byte]*tokenCall{},
	}
}

// VisibleApps asks Cloud Controller (or the cache) which mapped apps the
// token may see.
func (t *Tokens) VisibleApps(ctx context.Context, token string) (scaler.Viewer, error) {
	key := sha256.Sum256([]byte(token))
	t.mu.Lock()
	if a, ok := t.cache[key]; ok && t.now().Before(a.until) {
		t.mu.Unlock()
		return a.v, a.err
	}
	c := t.inflight[key]
	if c == nil {
		c = &tokenCall{done: make(chan struct{})}
		t.inflight[key] = c
		// Not bound to this request: others may wait for the same answer.
		go t.check(context.WithoutCancel(ctx), key, token, c)
	}
	t.mu.Unlock()
	select {
	case <-c.done:
		return c.v, c.err
	case <-ctx.Done():
		return scaler.Viewer{}, ctx.Err()
	}
}

// check asks CC once for every concurrent request with the same token.
func (t *Tokens) check(ctx context.Context, key [32]byte, token string, c *tokenCall) {
	defer close(c.done)
	t.sem <- struct{}{}
	c.v, c.err = t.ask(ctx, token) // bounded by the client's timeout
	<-t.sem
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.inflight, key)
	// A refusal stays a refusal; an outage is asked again.
	if c.err != nil && !errors.Is(c.err, scaler.ErrTokenRejected) && !errors.Is(c.err, scaler.ErrTokenForbidden) {
		return
	}
	now := t.now()
	until := now.Add(t.ttl)
	if exp, ok := jwtExpiry(token); ok && exp.Before(until) {
		until = exp
	}
	if !until.After(now) {
		return
	}
	if len(t.cache) >= maxCachedTokens {
		t.evictLocked(now)
	}
	t.cache[key] = tokenAnswer{v: c.v, err: c.err, until: until}
}

// evictLocked drops the expired answers, or else the one closest to expiry.
func (t *Tokens) evictLocked(now time.Time) {
	var first [32]byte
	var firstUntil time.Time
	for k, a := range t.cache {
		if !now.Before(a.until) {
			delete(t.cache, k)
			continue
		}
		if firstUntil.IsZero() || a.until.Before(firstUntil) {
			first, firstUntil = k, a.until
		}
	}
	if len(t.cache) >= maxCachedTokens {
		delete(t.cache, first)
	}
}

// ask lists the mapped apps the token may see, every page.
func (t *Tokens) ask(ctx context.Context, token string) (scaler.Viewer, error) {
	q := url.Values{"label_selector": {mapping.LabelMapped + "=" + mapping.LabelMappedTrue}, "per_page": {fmt.Sprint(t.pageSize)}}
	next := t.api + "/v3/apps?" + q.Encode()
	var guids []string
	for next != "" {
		var page struct {
			Pagination cfenv.Page `json:"pagination"`
			Resources  []struct {
				GUID string `json:"guid"`
			} `json:"resources"`
		}
		if err := t.get(ctx, next, token, &page); err != nil {
			return scaler.Viewer{}, err
		}
		for _, r := range page.Resources {
			guids = append(guids, r.GUID)
		}
		var err error
		if next, err = page.Pagination.NextURL(t.api); err != nil {
			return scaler.Viewer{}, err
		}
	}
	return scaler.OnlyApps(guids...), nil
}

func (t *Tokens) get(ctx context.Context, u, token string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "hottopic-scaler")
	resp, err := t.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("Cloud Controller at %s unreachable: %v", t.api, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return scaler.ErrTokenRejected
	case resp.StatusCode == http.StatusForbidden:
		return scaler.ErrTokenForbidden
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("Cloud Controller at %s answered %s", t.api, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("Cloud Controller at %s sent an unreadable app list: %v", t.api, err)
	}
	return nil
}

// jwtExpiry reads a JWT's exp without checking the signature: it only ever
// shortens how long an answer is kept, CC does the checking.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil || c.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*c.Exp), 0), true
}
