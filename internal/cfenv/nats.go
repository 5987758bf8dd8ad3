package cfenv

// This file finds Hot Topic's NATS server the CF way (a bound service tagged
// "hottopic" or "nats", or HOTTOPIC_NATS_URL) and turns its credentials into
// nats.go options.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// EnvNATSURL overrides the NATS URL from VCAP_SERVICES (local runs).
const EnvNATSURL = "HOTTOPIC_NATS_URL"

// EnvNATSCACert is the PEM of the CA that signed the NATS servers'
// certificates (hottopic-broker init --tls writes it to broker.env and
// scaler.env); it replaces the service's ca_cert. Its line breaks may be
// written as \n, as init's env files hold them.
const EnvNATSCACert = "HOTTOPIC_NATS_CA_CERT"

// NATS is where and how to connect. Its String form never shows a secret.
type NATS struct {
	URLs    []string
	Source  string // "HOTTOPIC_NATS_URL" or `service "name"`
	Options []nats.Option
	// CACert is the PEM of the CA the connection trusts (from the
	// service's ca_cert or HOTTOPIC_NATS_CA_CERT); "" for the system's.
	CACert string
}

// ErrNoNATS means no NATS service is bound and no URL is set.
var ErrNoNATS = errors.New("no NATS server configured: bind a service tagged \"hottopic\" (or \"nats\") with a uri/urls credential, or set " + EnvNATSURL)

// NATSFromEnv reads the NATS configuration from the environment: the service
// found in VCAP_SERVICES supplies credentials, HOTTOPIC_NATS_URL (if set)
// replaces its URLs.
func NATSFromEnv(getenv Getenv) (NATS, error) {
	var cfg NATS
	services, err := Services(getenv)
	if err != nil {
		return cfg, err
	}
	svc, found := FindNATS(services)
	if found {
		cfg, err = fromService(svc)
		if err != nil {
			return cfg, err
		}
	}
	if override := strings.TrimSpace(getenv(EnvNATSURL)); override != "" {
		urls, err := splitURLs(override, EnvNATSURL)
		if err != nil {
			return cfg, err
		}
		cfg.URLs, cfg.Source = urls, EnvNATSURL
	}
	if ca := strings.TrimSpace(getenv(EnvNATSCACert)); ca != "" {
		if !strings.Contains(ca, "\n") {
			ca = strings.ReplaceAll(ca, `\n`, "\n")
		}
		o, ok := trustCA(ca)
		if !ok {
			return cfg, fmt.Errorf("%s holds no PEM certificate: give the CA's certificate (tls/ca.pem of hottopic-broker init --tls)", EnvNATSCACert)
		}
		// Last: it replaces the TLS configuration of the service's ca_cert.
		cfg.Options, cfg.CACert = append(cfg.Options, o), ca
	}
	if len(cfg.URLs) == 0 {
		if found {
			return cfg, fmt.Errorf("NATS service %q has no \"uri\" or \"urls\" credential", svc.Name)
		}
		return cfg, ErrNoNATS
	}
	return cfg, nil
}

// NATSFromURL is the configuration for a plain URL list (CLI flags, tests).
func NATSFromURL(u string) (NATS, error) {
	urls, err := splitURLs(u, "NATS URL")
	if err != nil {
		return NATS{}, err
	}
	return NATS{URLs: urls, Source: "flag"}, nil
}

// NATSFromService is the configuration of one service (a binding or a
// service key), picked by name rather than by tag: `hottopic publish
// --service` in the dev runtime.
func NATSFromService(svc Service) (NATS, error) {
	cfg, err := fromService(svc)
	if err == nil && len(cfg.URLs) == 0 {
		err = fmt.Errorf("NATS service %q has no \"uri\" or \"urls\" credential", svc.Name)
	}
	return cfg, err
}

// fromService reads the NATS URLs and credentials of a bound service.
func fromService(svc Service) (NATS, error) {
	cfg := NATS{Source: fmt.Sprintf("service %q", svc.Name)}
	c, err := readCredentials(svc)
	if err != nil {
		return cfg, err
	}
	if c.urls != "" {
		if cfg.URLs, err = splitURLs(c.urls, fmt.Sprintf("service %q credential uri/urls", svc.Name)); err != nil {
			return cfg, err
		}
	}
	for _, option := range []func(serviceCredentials) (nats.Option, error){userOption, tokenOption, nkeyOption, credsOption, caOption, inboxOption} {
		o, err := option(c)
		if err != nil {
			return cfg, fmt.Errorf("service %q credential %w", svc.Name, err)
		}
		if o != nil {
			cfg.Options = append(cfg.Options, o)
		}
	}
	cfg.CACert = c.caCert
	return cfg, nil
}

// serviceCredentials are the credentials of a NATS service that Hot Topic
// reads, each trimmed; "" when absent.
type serviceCredentials struct {
	urls, user, password, token, nkeySeed, creds, caCert, inboxPrefix string
}

// readCredentials reads them; where several keys mean the same, the first
// one set wins (urls, uri, url; user, username).
func readCredentials(svc Service) (serviceCredentials, error) {
	var c serviceCredentials
	for _, f := range []struct {
		keys []string
		dst  *string
	}{
		{[]string{"urls", "uri", "url"}, &c.urls},
		{[]string{"user", "username"}, &c.user},
		{[]string{"password"}, &c.password},
		{[]string{"token"}, &c.token},
		{[]string{"nkey_seed"}, &c.nkeySeed},
		{[]string{"creds"}, &c.creds},
		{[]string{"ca_cert"}, &c.caCert},
		{[]string{"inbox_prefix"}, &c.inboxPrefix},
	} {
		for _, k := range f.keys {
			v, err := svc.Credential(k)
			if err != nil {
				return c, err
			}
			if v = strings.TrimSpace(v); v != "" {
				*f.dst = v
				break
			}
		}
	}
	return c, nil
}

func userOption(c serviceCredentials) (nats.Option, error) {
	if c.user == "" {
		return nil, nil
	}
	return nats.UserInfo(c.user, c.password), nil
}

func tokenOption(c serviceCredentials) (nats.Option, error) {
	if c.token == "" {
		return nil, nil
	}
	return nats.Token(c.token), nil
}

func nkeyOption(c serviceCredentials) (nats.Option, error) {
	if c.nkeySeed == "" {
		return nil, nil
	}
	bad := errors.New("nkey_seed is not a valid NATS nkey seed")
	kp, err := nkeys.FromSeed([]byte(c.nkeySeed))
	if err != nil {
		return nil, bad
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, bad
	}
	return nats.Nkey(pub, kp.Sign), nil
}

// credsOption reads the content of a NATS .creds file: a user JWT and its
// nkey seed.
func credsOption(c serviceCredentials) (nats.Option, error) {
	if c.creds == "" {
		return nil, nil
	}
	userJWT, err := jwt.ParseDecoratedJWT([]byte(c.creds))
	if err != nil || userJWT == "" {
		return nil, errors.New("creds is not the content of a NATS .creds file (no user JWT)")
	}
	kp, err := nkeys.ParseDecoratedNKey([]byte(c.creds))
	if err != nil {
		return nil, errors.New("creds is not the content of a NATS .creds file (no nkey seed)")
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, errors.New("creds holds no usable nkey seed")
	}
	return nats.UserJWTAndSeed(userJWT, string(seed)), nil
}

// inboxOption: a broker binding may receive replies only under its own
// prefix (_INBOX_<binding id>), so every inbox of the connection must use it.
func inboxOption(c serviceCredentials) (nats.Option, error) {
	if c.inboxPrefix == "" {
		return nil, nil
	}
	if strings.ContainsAny(c.inboxPrefix, " \t\r\n*>") || strings.HasSuffix(c.inboxPrefix, ".") || strings.HasPrefix(c.inboxPrefix, ".") {
		return nil, fmt.Errorf("inbox_prefix %q must be a subject without wildcards or spaces, not starting or ending with '.'", c.inboxPrefix)
	}
	return nats.CustomInboxPrefix(c.inboxPrefix), nil
}

func caOption(c serviceCredentials) (nats.Option, error) {
	if c.caCert == "" {
		return nil, nil
	}
	o, ok := trustCA(c.caCert)
	if !ok {
		return nil, errors.New("ca_cert holds no PEM certificate")
	}
	return o, nil
}

// trustCA is TLS that trusts the certificates of caPEM only; false when it
// holds none.
func trustCA(caPEM string) (nats.Option, bool) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, false
	}
	return nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), true
}

func splitURLs(raw, what string) ([]string, error) {
	var out []string
	for _, u := range strings.Split(raw, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		p, err := url.Parse(u)
		if err != nil || p.Host == "" {
			return nil, fmt.Errorf("%s: %q is not a NATS URL (want nats://host:port)", what, RedactURL(u))
		}
		switch p.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return nil, fmt.Errorf("%s: scheme %q is not supported (nats, tls, ws, wss)", what, p.Scheme)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is empty", what)
	}
	return out, nil
}

// RedactURL hides the user info of a URL (a token or user:password).
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		if i := strings.LastIndex(u, "@"); i >= 0 {
			return "***@" + u[i+1:]
		}
		return u
	}
	if p.User == nil {
		return p.String()
	}
	// Written by hand: url.User("***") would print as %2A%2A%2A.
	p.User = nil
	s := p.String()
	if i := strings.Index(s, "://"); i >= 0 {
		return s[:i+3] + "***@" + s[i+3:]
	}
	return "***@" + s
}

// String describes the configuration without secrets.
func (c NATS) String() string {
	red := make([]string, len(c.URLs))
	for i, u := range c.URLs {
		red[i] = RedactURL(u)
	}
	return fmt.Sprintf("%s (from %s)", strings.Join(red, ","), c.Source)
}

// Connect dials NATS and keeps reconnecting forever after the first success.
// The first connection must succeed within ctx: a sidecar or scaler that
// cannot reach NATS at start says so instead of idling silently. Extra options
// (handlers, name) are applied after the configuration's own.
func Connect(ctx context.Context, cfg NATS, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.Timeout(5 * time.Second),
	}
	opts = append(opts, cfg.Options...)
	opts = append(opts, extra...)
	servers := strings.Join(cfg.URLs, ",")
	var lastErr error
	for {
		nc, err := nats.Connect(servers, opts...)
		if err == nil {
			return nc, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot connect to NATS at %s: %s", cfg, scrub(lastErr, cfg))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// scrub removes any URL user info that an error might echo.
func scrub(err error, cfg NATS) string {
	msg := err.Error()
	for _, u := range cfg.URLs {
		msg = strings.ReplaceAll(msg, u, RedactURL(u))
		if p, perr := url.Parse(u); perr == nil && p.User != nil {
			msg = strings.ReplaceAll(msg, p.User.String(), "***")
		}
	}
	return msg
}
