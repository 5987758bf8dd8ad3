// Package cfplatform is the scaler's Platform on Cloud Foundry: mapped apps
// found by label selector through Cloud Controller v3, their web process read
// and scaled, with UAA client credentials (refreshed by go-cfclient before
// expiry, and again on a 401). Every failure that says "Cloud Controller is
// unwell" (connection errors, 5xx, 429) closes a gate for an exponentially
// growing time, or as long as Retry-After says, so that an outage costs CC
// nothing and the scaler leaves apps as they are.
package cfplatform

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	"github.com/cloudfoundry/go-cfclient/v3/config"
	"github.com/cloudfoundry/go-cfclient/v3/resource"

	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler"
)

// Environment variables (docs/design.md, "The scaler").
const (
	EnvAPI          = "CF_API"
	EnvClientID     = "CF_CLIENT_ID"
	EnvClientSecret = "CF_CLIENT_SECRET"
	EnvSkipSSL      = "CF_SKIP_SSL_VALIDATION"
)

// Config says where Cloud Controller is and who the scaler is there.
type Config struct {
	API               string
	ClientID          string
	ClientSecret      string
	SkipSSLValidation bool
	// HTTPClient is the base client (its Transport is wrapped); nil for a
	// default one.
	HTTPClient *http.Client
	// CacheTTL is how long a web process's instance count read in bulk at
	// discovery (or returned by a scale) answers Instances without asking CC
	// again. Default 15s: a little longer than the discovery interval.
	CacheTTL time.Duration
	// RequestTimeout bounds one CC request (default 20s).
	RequestTimeout time.Duration
	// PageSize is per_page of list requests (default 5000, CC's maximum).
	PageSize int
}

// String never shows the secret.
func (c Config) String() string {
	return fmt.Sprintf("Cloud Controller %s as client %q", c.API, c.ClientID)
}

// FromEnv reads CF_API (else cf_api from VCAP_APPLICATION), CF_CLIENT_ID,
// CF_CLIENT_SECRET and CF_SKIP_SSL_VALIDATION.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		API:          strings.TrimSpace(getenv(EnvAPI)),
		ClientID:     strings.TrimSpace(getenv(EnvClientID)),
		ClientSecret: getenv(EnvClientSecret),
	}
	if c.API == "" {
		if app, err := cfenv.App(getenv); err == nil {
			c.API = app.CFAPI
		}
	}
	if v := strings.TrimSpace(getenv(EnvSkipSSL)); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("%s must be true or false, got %q", EnvSkipSSL, v)
		}
		c.SkipSSLValidation = b
	}
	return c, c.validate()
}

func (c Config) validate() error {
	switch {
	case c.API == "":
		return fmt.Errorf("%s is not set (the Cloud Controller URL, e.g. https://api.example.com)", EnvAPI)
	case c.ClientID == "":
		return fmt.Errorf("%s is not set (a UAA client with cloud_controller.read and cloud_controller.write)", EnvClientID)
	case strings.TrimSpace(c.ClientSecret) == "":
		return fmt.Errorf("%s is not set", EnvClientSecret)
	}
	u, err := url.Parse(c.API)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%s must be an http(s) URL, got %q", EnvAPI, c.API)
	}
	return nil
}

// Platform implements scaler.Platform on Cloud Controller v3. Its methods are
// safe for concurrent use.
type Platform struct {
	cfg Config
	// Two lanes, each its own go-cfclient client and token, each making one
	// call at a time (go-cfclient's re-authentication is not safe for
	// concurrent use): discovery's long listings never hold up a scale.
	list, ops *lane

	mu      sync.Mutex    // guards the fields below; never held during a call
	gate    time.Time     // no CC call before this
	wait    time.Duration // the back-off that set gate
	fails   int
	lastErr error
	procs   map[string]webProcess // app GUID → its web process
	now     func() time.Time
}

type webProcess struct {
	guid      string
	instances int
	at        time.Time
}

var _ scaler.Platform = (*Platform)(nil)

// New checks cfg; it does not contact Cloud Controller (that happens, and is
// retried, on first use, so the scaler starts while CC is down).
func New(cfg Config) (*Platform, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 15 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	if cfg.PageSize <= 0 || cfg.PageSize > 5000 {
		cfg.PageSize = 5000
	}
	base := cfg.HTTPClient
	var inner http.RoundTripper
	if base != nil && base.Transport != nil {
		inner = base.Transport
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: cfg.SkipSSLValidation} //nolint:gosec // operator's explicit choice (labs)
		inner = t
	}
	if t, ok := inner.(*http.Transport); ok && cfg.SkipSSLValidation {
		t = t.Clone()
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{}
		}
		t.TLSClientConfig.InsecureSkipVerify = true
		inner = t
	}
	return &Platform{
		cfg:   cfg,
		list:  &lane{rt: &recordingTransport{next: inner}},
		ops:   &lane{rt: &recordingTransport{next: inner}},
		procs: map[string]webProcess{},
		now:   time.Now,
	}, nil
}

type lane struct {
	mu sync.Mutex
	cf *client.Client
	rt *recordingTransport
}

// recordingTransport remembers the last response's status and Retry-After,
// which go-cfclient's errors do not carry.
type recordingTransport struct {
	next       http.RoundTripper
	mu         sync.Mutex
	status     int
	retryAfter time.Duration
}

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.status = 0
		return resp, err
	}
	t.status = resp.StatusCode
	if resp.StatusCode == http.StatusTooManyRequests {
		if s, perr := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); perr == nil && s > 0 {
			t.retryAfter = max(t.retryAfter, time.Duration(s)*time.Second)
		}
	}
	return resp, err
}

func (t *recordingTransport) reset() {
	t.mu.Lock()
	t.status, t.retryAfter = -1, 0
	t.mu.Unlock()
}

func (t *recordingTransport) last() (int, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status, t.retryAfter
}

// call runs one CC operation on a lane, through the gate.
func (p *Platform) call(ctx context.Context, l *lane, what string, op func(context.Context, *client.Client) error) error {
	p.mu.Lock()
	now, gate, wait, lastErr := p.now(), p.gate, p.wait, p.lastErr
	p.mu.Unlock()
	if now.Before(gate) {
		// Say the back-off itself: the time left may be a few milliseconds
		// of a minute-long wait.
		left := max(gate.Sub(now).Round(100*time.Millisecond), 100*time.Millisecond)
		return fmt.Errorf("%s: Cloud Controller unavailable, backing off %s after the last error (next attempt in %s): %v", what, wait, left, lastErr)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	l.rt.reset()
	err := p.connect(l)
	if err == nil {
		err = op(ctx, l.cf)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.fails, p.lastErr, p.gate, p.wait = 0, nil, time.Time{}, 0
		return nil
	}
	err = clean(err, p.cfg.ClientSecret)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	status, retryAfter := l.rt.last()
	if transient(err, status) {
		p.fails++
		wait := min(time.Second<<min(p.fails-1, 6), time.Minute)
		if retryAfter > wait {
			wait = retryAfter
		}
		p.gate, p.wait, p.lastErr = p.now().Add(wait), wait, err
		return fmt.Errorf("%s: %w (backing off %s)", what, err, wait)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// connect makes the lane's go-cfclient client on first use: config.New reads
// the API root to find UAA, so it needs CC up.
func (p *Platform) connect(l *lane) error {
	if l.cf != nil {
		return nil
	}
	httpClient := &http.Client{Transport: l.rt}
	if p.cfg.HTTPClient != nil {
		httpClient.Jar = p.cfg.HTTPClient.Jar
	}
	opts := []config.Option{
		config.ClientCredentials(p.cfg.ClientID, p.cfg.ClientSecret),
		config.HttpClient(httpClient),
		config.RequestTimeout(p.cfg.RequestTimeout),
		config.UserAgent("hottopic-scaler"),
	}
	if p.cfg.SkipSSLValidation {
		opts = append(opts, config.SkipTLSValidation())
	}
	cfg, err := config.New(p.cfg.API, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", p.cfg.API, err)
	}
	cf, err := client.New(cfg)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", p.cfg.API, err)
	}
	l.cf = cf
	return nil
}

// transient says whether an error means CC (or the way to it) is unwell, as
// opposed to a refusal about one app.
func transient(err error, status int) bool {
	var cfErr resource.CloudFoundryError
	if errors.As(err, &cfErr) {
		switch cfErr.Code {
		case 10013, 10014, 20008, 10001, 10015, 1000:
			return true
		}
	}
	var httpErr resource.CloudFoundryHTTPError
	if errors.As(err, &httpErr) {
		return httpErr.StatusCode >= 500 || httpErr.StatusCode == http.StatusTooManyRequests
	}
	switch {
	case status == 0 || status == -1: // no answer at all: connection refused, dropped, timed out
		return true
	case status >= 500, status == http.StatusTooManyRequests, status == http.StatusUnauthorized:
		return true
	}
	return false
}

// clean keeps a secret out of error text, should a library ever echo it.
func clean(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, "REDACTED"))
}

// guidsPerProcessList bounds the app GUIDs in one process list URL (~4 KB).
const guidsPerProcessList = 100

// MappedApps lists every app labelled hottopic.io/mapped=true (all pages),
// then reads their web processes in bulk so that Instances needs no call per
// app.
func (p *Platform) MappedApps(ctx context.Context) ([]scaler.App, error) {
	var out []scaler.App
	err := p.call(ctx, p.list, "list mapped apps", func(ctx context.Context, cf *client.Client) error {
		opts := client.NewAppListOptions()
		opts.PerPage = p.cfg.PageSize
		opts.LabelSel = client.LabelSelector{}
		opts.LabelSel.EqualTo(mapping.LabelMapped, mapping.LabelMappedTrue)
		apps, err := cf.Applications.ListAll(ctx, opts)
		if err != nil {
			return err
		}
		out = make([]scaler.App, 0, len(apps))
		for _, a := range apps {
			ann := map[string]string{}
			if a.Metadata != nil {
				for k, v := range a.Metadata.Annotations {
					if v != nil {
						ann[k] = *v
					}
				}
			}
			app := scaler.App{GUID: a.GUID, Name: a.Name, Annotations: ann}
			if a.Relationships.Space.Data != nil {
				app.SpaceGUID = a.Relationships.Space.Data.GUID
			}
			out = append(out, app)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(out); i += guidsPerProcessList {
		chunk := make([]string, 0, guidsPerProcessList)
		for _, a := range out[i:min(i+guidsPerProcessList, len(out))] {
			chunk = append(chunk, a.GUID)
		}
		began := p.now()
		err := p.call(ctx, p.list, "list web processes", func(ctx context.Context, cf *client.Client) error {
			opts := client.NewProcessOptions()
			opts.PerPage = p.cfg.PageSize
			opts.AppGUIDs.EqualTo(chunk...)
			opts.Types.EqualTo("web")
			procs, err := cf.Processes.ListAll(ctx, opts)
			if err != nil {
				return err
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			now := p.now()
			for _, pr := range procs {
				p.rememberLocked(pr.Relationships.App.Data.GUID, webProcess{guid: pr.GUID, instances: pr.Instances, at: now}, began)
			}
			return nil
		})
		if err != nil {
			// The apps are known; their counts will be read one by one.
			break
		}
	}
	p.mu.Lock()
	keep := make(map[string]bool, len(out))
	for _, a := range out {
		keep[a.GUID] = true
	}
	for guid := range p.procs {
		if !keep[guid] {
			delete(p.procs, guid)
		}
	}
	p.mu.Unlock()
	return out, nil
}

// Instances is the desired instance count of the app's web process: from
// the bulk read of the last discovery while fresh, else from CC.
func (p *Platform) Instances(ctx context.Context, appGUID string) (int, error) {
	p.mu.Lock()
	wp, ok := p.procs[appGUID]
	fresh := ok && p.now().Sub(wp.at) < p.cfg.CacheTTL
	p.mu.Unlock()
	if fresh {
		return wp.instances, nil
	}
	wp, err := p.readWeb(ctx, appGUID)
	if err != nil {
		return 0, err
	}
	return wp.instances, nil
}

func (p *Platform) readWeb(ctx context.Context, appGUID string) (webProcess, error) {
	var wp webProcess
	began := p.now()
	err := p.call(ctx, p.ops, "read web process of app "+appGUID, func(ctx context.Context, cf *client.Client) error {
		opts := client.NewProcessOptions()
		opts.Types.EqualTo("web")
		pr, err := cf.Processes.FirstForApp(ctx, appGUID, opts)
		if err != nil {
			return err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		wp = p.rememberLocked(appGUID, webProcess{guid: pr.GUID, instances: pr.Instances, at: p.now()}, began)
		return nil
	})
	return wp, err
}

// rememberLocked keeps what a read that began at began found, unless what
// is kept was stored after that (a scale, or a later read, landed while this
// read was under way): an older count would make the app be scaled again.
// It returns the count kept.
func (p *Platform) rememberLocked(appGUID string, wp webProcess, began time.Time) webProcess {
	if old, ok := p.procs[appGUID]; ok && old.at.After(began) {
		return old
	}
	p.procs[appGUID] = wp
	return wp
}

// Scale sets the desired instance count of the app's web process.
func (p *Platform) Scale(ctx context.Context, appGUID string, instances int) error {
	p.mu.Lock()
	wp, ok := p.procs[appGUID]
	p.mu.Unlock()
	if !ok {
		var err error
		if wp, err = p.readWeb(ctx, appGUID); err != nil {
			return err
		}
	}
	return p.call(ctx, p.ops, fmt.Sprintf("scale app %s to %d", appGUID, instances), func(ctx context.Context, cf *client.Client) error {
		n := instances
		pr, err := cf.Processes.Scale(ctx, wp.guid, &resource.ProcessScale{Instances: &n})
		if err != nil {
			return err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.procs[appGUID] = webProcess{guid: pr.GUID, instances: pr.Instances, at: p.now()}
		return nil
	})
}
