package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// cfTarget is a logged-in, space-targeted view of Cloud Foundry: from the cf
// CLI's config.json standalone, or from the plugin RPC connection.
type cfTarget struct {
	cc               *ccClient
	org, space, user string
	spaceGUID        string
}

// where is the cf-style "in org O / space S as U" tail of progress lines.
func (t *cfTarget) where() string {
	s := fmt.Sprintf("in org %s / space %s", t.org, t.space)
	if t.user != "" {
		s += " as " + t.user
	}
	return s
}

// targetOpener yields the target a command works against; standalone and
// plugin commands differ only in it.
type targetOpener func(ctx context.Context) (*cfTarget, error)

// authenticator hands out "bearer …" tokens. refresh is called once after a
// 401 and must return a different, fresh token or an error.
type authenticator interface {
	token(ctx context.Context) (string, error)
	refresh(ctx context.Context) (string, error)
}

// ccClient is the handful of Cloud Controller v3 calls the CLI makes. It is
// plain net/http rather than go-cfclient because the CLI must send exactly
// the metadata it changes (go-cfclient's AppUpdate always sends "name") and
// write refreshed tokens back to the cf CLI config.
type ccClient struct {
	api  string
	hc   *http.Client
	auth authenticator
}

type ccApp struct {
	GUID     string `json:"guid"`
	Name     string `json:"name"`
	State    string `json:"state"`
	Metadata struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

// metadataPatch is the body of PATCH /v3/apps/:guid. A nil value deletes the
// key (CC merges metadata); keys not present stay as they are.
type metadataPatch struct {
	Labels      map[string]*string `json:"labels,omitempty"`
	Annotations map[string]*string `json:"annotations,omitempty"`
}

func (p metadataPatch) empty() bool { return len(p.Labels) == 0 && len(p.Annotations) == 0 }

// ccError is a Cloud Controller error response.
type ccError struct {
	Status int
	Code   int    `json:"code"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (e *ccError) Error() string {
	if e.Title == "" {
		return fmt.Sprintf("Cloud Controller answered HTTP %d", e.Status)
	}
	return fmt.Sprintf("%s (%d): %s", e.Title, e.Code, e.Detail)
}

// errNotLoggedIn wraps a 401 that survived a token refresh.
var errNotLoggedIn = errors.New("not logged in")

// appByName resolves an app in the targeted space.
func (c *ccClient) appByName(ctx context.Context, spaceGUID, name string) (*ccApp, error) {
	q := url.Values{"names": {name}, "space_guids": {spaceGUID}}
	apps, err := c.listApps(ctx, q)
	if err != nil {
		return nil, err
	}
	for i := range apps {
		if apps[i].Name == name {
			return &apps[i], nil
		}
	}
	return nil, nil
}

// mappedApps lists the space's apps carrying hottopic.io/mapped=true.
func (c *ccClient) mappedApps(ctx context.Context, spaceGUID string) ([]ccApp, error) {
	q := url.Values{
		"label_selector": {labelSelectorMapped},
		"space_guids":    {spaceGUID},
		"order_by":       {"name"},
	}
	return c.listApps(ctx, q)
}

// listApps follows pagination.next until the last page.
func (c *ccClient) listApps(ctx context.Context, q url.Values) ([]ccApp, error) {
	var all []ccApp
	err := listAll(ctx, c, "/v3/apps", q, func(p *ccPage[ccApp]) { all = append(all, p.Resources...) })
	return all, err
}

// patchMetadata sends one PATCH of the app's metadata.
func (c *ccClient) patchMetadata(ctx context.Context, guid string, p metadataPatch) (*ccApp, error) {
	body, err := json.Marshal(struct {
		Metadata metadataPatch `json:"metadata"`
	}{p})
	if err != nil {
		return nil, err
	}
	var app ccApp
	if err := c.do(ctx, http.MethodPatch, c.api+"/v3/apps/"+url.PathEscape(guid), body, &app); err != nil {
		return nil, err
	}
	return &app, nil
}

func (c *ccClient) do(ctx context.Context, method, u string, body []byte, out any) error {
	tok, err := c.auth.token(ctx)
	if err != nil {
		return err
	}
	resp, err := c.send(ctx, method, u, body, tok)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		drain(resp)
		if tok, err = c.auth.refresh(ctx); err != nil {
			return err
		}
		if resp, err = c.send(ctx, method, u, body, tok); err != nil {
			return err
		}
	}
	defer drain(resp)
	if resp.StatusCode/100 != 2 {
		e := decodeCCError(resp)
		if resp.StatusCode == http.StatusUnauthorized {
			return fmt.Errorf("%w: Cloud Controller refused the cf CLI token (%s); use 'cf login'", errNotLoggedIn, e.Title)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("Cloud Controller sent an unreadable answer to %s %s: %v", method, redactURL(u), err)
	}
	return nil
}

func (c *ccClient) send(ctx context.Context, method, u string, body []byte, tok string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", tok)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "hottopic/"+Version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Cloud Controller at %s: %v", c.api, unwrapURLError(err))
	}
	return resp, nil
}

func decodeCCError(resp *http.Response) *ccError {
	var env struct {
		Errors []ccError `json:"errors"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &ccError{Status: resp.StatusCode}
	if json.Unmarshal(b, &env) == nil && len(env.Errors) > 0 {
		*e = env.Errors[0]
		e.Status = resp.StatusCode
	}
	return e
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// unwrapURLError drops net/url's "Get \"URL\": " prefix; the caller names the
// endpoint itself.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}
