package ccdouble

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultAPIVersion is the CC API version the root document reports.
const DefaultAPIVersion = "3.195.0"

// CC is a Cloud Controller v3 + UAA test double serving on 127.0.0.1. All
// methods are safe for concurrent use.
type CC struct {
	t testing.TB

	srvMu   sync.Mutex // guards the listener lifecycle (Down/Up)
	srv     *http.Server
	sock    *os.File // the listening socket, kept bound while Down
	addr    string
	tlsConf *tls.Config
	certPEM []byte
	useTLS  bool

	mu              sync.Mutex // guards everything below
	apiVersion      string
	unavailable     bool
	orgs            map[string]*org
	spaces          map[string]*space
	apps            map[string]*app
	processes       map[string]*process
	orgOrder        []string
	spaceOrder      []string
	appOrder        []string
	featureFlags    map[string]bool
	offerings       map[string]*serviceOffering
	plans           map[string]*servicePlan
	instances       map[string]*serviceInstance
	bindings        map[string]*serviceBinding
	offeringOrder   []string
	instanceOrder   []string
	bindingOrder    []string
	clients         map[string]*uaaClient
	users           map[string]*uaaUser
	roles           map[string][]Role
	scopes          map[string][]string
	tokens          map[string]*issuedToken
	refreshTokens   map[string]*refreshGrant
	signingKey      []byte
	tokenLifetime   time.Duration
	refreshLifetime time.Duration
	calls           []Call
	faults          []*Fault
	onRequest       []func(Call)
	onCall          []func(Call)
}

// Option configures a CC.
type Option func(*CC)

// WithTLS serves HTTPS with a self-signed certificate for 127.0.0.1 (see
// HTTPClient and CACertPEM); clients that do not trust it need to skip
// validation (cf api --skip-ssl-validation).
func WithTLS() Option { return func(c *CC) { c.useTLS = true } }

// WithTokenLifetime sets the lifetime of access tokens issued from now on
// (default 1h).
func WithTokenLifetime(d time.Duration) Option { return func(c *CC) { c.tokenLifetime = d } }

// WithAPIVersion sets the version in the root document's cloud_controller_v3 link.
func WithAPIVersion(v string) Option { return func(c *CC) { c.apiVersion = v } }

// WithClient registers a UAA client with a secret and CC roles, like AddClient.
func WithClient(id, secret string, roles ...Role) Option {
	return func(c *CC) { c.addClientLocked(id, secret, roles) }
}

// New starts a double on 127.0.0.1 and stops it when the test ends. The UAA
// client "cf" (empty secret, password and refresh_token grants) is always
// registered, as on a real UAA.
func New(t testing.TB, opts ...Option) *CC {
	t.Helper()
	c := &CC{
		t:               t,
		apiVersion:      DefaultAPIVersion,
		orgs:            map[string]*org{},
		spaces:          map[string]*space{},
		apps:            map[string]*app{},
		processes:       map[string]*process{},
		featureFlags:    map[string]bool{"app_scaling": true},
		offerings:       map[string]*serviceOffering{},
		plans:           map[string]*servicePlan{},
		instances:       map[string]*serviceInstance{},
		bindings:        map[string]*serviceBinding{},
		clients:         map[string]*uaaClient{},
		users:           map[string]*uaaUser{},
		roles:           map[string][]Role{},
		scopes:          map[string][]string{},
		tokens:          map[string]*issuedToken{},
		refreshTokens:   map[string]*refreshGrant{},
		signingKey:      make([]byte, 32),
		tokenLifetime:   time.Hour,
		refreshLifetime: 30 * 24 * time.Hour,
	}
	_, _ = rand.Read(c.signingKey)
	c.clients["cf"] = &uaaClient{id: "cf", public: true, grants: []string{"password", "refresh_token"}}
	for _, o := range opts {
		o(c)
	}
	if c.useTLS {
		if err := c.makeCert(); err != nil {
			t.Fatalf("ccdouble: creating certificate: %v", err)
		}
	}
	sock, err := bindLoopback()
	if err != nil {
		t.Fatalf("ccdouble: listen: %v", err)
	}
	c.sock = sock
	ln, err := c.listen()
	if err != nil {
		_ = sock.Close()
		t.Fatalf("ccdouble: listen: %v", err)
	}
	c.addr = ln.Addr().String()
	c.serve(ln)
	t.Cleanup(c.close)
	return c
}

// URL is the API root, e.g. http://127.0.0.1:PORT (no trailing slash).
func (c *CC) URL() string {
	if c.useTLS {
		return "https://" + c.addr
	}
	return "http://" + c.addr
}

// UAAURL is the UAA (and login) base URL advertised in the root document.
func (c *CC) UAAURL() string { return c.URL() + "/uaa" }

// TokenURL is where clients POST token requests.
func (c *CC) TokenURL() string { return c.UAAURL() + "/oauth/token" }

// HTTPClient returns a client that trusts the double's certificate.
func (c *CC) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.useTLS {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(c.certPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// CACertPEM is the PEM certificate served with WithTLS (nil otherwise).
func (c *CC) CACertPEM() []byte { return c.certPEM }

// Down stops listening and drops every open connection: clients get
// "connection refused" until Up. The port stays bound meanwhile, so no other
// socket on the machine can take it. Handlers still running finish unseen.
func (c *CC) Down() {
	c.srvMu.Lock()
	defer c.srvMu.Unlock()
	if c.srv != nil {
		// On Linux, shutting a listening socket down stops it listening but
		// leaves it bound; pending and new connections are refused. Without
		// SO_REUSEADDR no other socket can bind the port meanwhile.
		_ = control(c.sock, func(fd int) error { return syscall.Shutdown(fd, syscall.SHUT_RD) })
		_ = control(c.sock, func(fd int) error { return syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0) })
		_ = c.srv.Close()
		c.srv = nil
	}
}

// Up listens again on the same address after Down.
func (c *CC) Up() {
	c.srvMu.Lock()
	defer c.srvMu.Unlock()
	if c.srv != nil {
		return
	}
	ln, err := c.listen()
	if err != nil {
		c.t.Errorf("ccdouble: Up: listen on %s: %v", c.addr, err)
		return
	}
	c.serveLocked(ln)
}

// SetUnavailable makes every request (CC and UAA) answer 503 with code
// 10015 CF-ServiceUnavailable while on, as a CC behind a router in maintenance.
func (c *CC) SetUnavailable(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unavailable = on
}

func (c *CC) serve(ln net.Listener) {
	c.srvMu.Lock()
	defer c.srvMu.Unlock()
	c.serveLocked(ln)
}

func (c *CC) serveLocked(ln net.Listener) {
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	if c.useTLS {
		srv.TLSConfig = c.tlsConf
		ln = tls.NewListener(ln, c.tlsConf)
	}
	c.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

func (c *CC) close() {
	c.Down()
	_ = c.sock.Close()
}

// bindLoopback binds a TCP socket to a free port on 127.0.0.1; the double
// owns it for its whole life and listens on it while up. The port is bound
// by number: a socket bound to port 0 gives its port up when it stops
// listening.
func bindLoopback() (*os.File, error) {
	var err error
	for range 10 {
		var probe net.Listener
		if probe, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		port := probe.Addr().(*net.TCPAddr).Port
		_ = probe.Close()
		fd, serr := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if serr != nil {
			return nil, os.NewSyscallError("socket", serr)
		}
		if serr = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); serr == nil {
			return os.NewFile(uintptr(fd), "ccdouble-listener"), nil
		}
		_ = syscall.Close(fd)
		err = os.NewSyscallError("bind", serr) // taken in between: try another
	}
	return nil, err
}

// listen makes the double's socket listen and returns a listener on a
// duplicate of it (closing that leaves the socket bound). SO_REUSEADDR lets
// it listen again over the connections Down left in TIME_WAIT.
func (c *CC) listen() (net.Listener, error) {
	if err := control(c.sock, func(fd int) error {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
		return os.NewSyscallError("listen", syscall.Listen(fd, syscall.SOMAXCONN))
	}); err != nil {
		return nil, err
	}
	return net.FileListener(c.sock)
}

// control runs f on the socket's descriptor.
func control(sock *os.File, f func(fd int) error) error {
	raw, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (c *CC) makeCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	c.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	c.tlsConf = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	return nil
}

func (c *CC) now() time.Time { return time.Now().UTC().Truncate(time.Second) }

// statusRecorder captures the status code a handler writes and holds the
// response back until the call is recorded: a client that has seen the
// response (even a large one) always finds the call in Calls.
type statusRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
	// dropped is a connection a Drop fault took over; it is closed only once
	// the call is recorded, so a client that sees the drop also sees the call.
	dropped io.Closer
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// send writes the held response, or closes the dropped connection.
func (r *statusRecorder) send() {
	if r.dropped != nil {
		_ = r.dropped.Close()
		return
	}
	if r.status != 0 {
		r.ResponseWriter.WriteHeader(r.status)
		_, _ = r.ResponseWriter.Write(r.body.Bytes())
	}
}

// ServeHTTP records the call, applies faults and routes it.
func (c *CC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	call := Call{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     redactBody(r.URL.Path, body),
		Time:     time.Now(),
	}
	call.Subject = c.subjectOf(r, body)

	c.mu.Lock()
	hooks := append([]func(Call){}, c.onRequest...)
	c.mu.Unlock()
	for _, h := range hooks {
		h(call)
	}

	rec := &statusRecorder{ResponseWriter: w}
	if !c.applyFault(rec, r) {
		c.route(rec, r)
	}
	if call.Status == 0 {
		call.Status = rec.status
	}
	c.mu.Lock()
	c.calls = append(c.calls, call)
	hooks = append([]func(Call){}, c.onCall...)
	c.mu.Unlock()
	for _, h := range hooks {
		h(call)
	}
	rec.send()
}

func (c *CC) route(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case p == "" && r.Method == http.MethodGet:
		c.serveRoot(w)
	case p == "/v3" && r.Method == http.MethodGet:
		c.serveV3Root(w)
	case p == "/v3/info" && r.Method == http.MethodGet:
		c.serveInfo(w)
	case p == "/uaa" || strings.HasPrefix(p, "/uaa/"):
		c.serveUAA(w, r, strings.TrimPrefix(p, "/uaa"))
	case strings.HasPrefix(p, "/v3/"):
		c.serveV3(w, r, p)
	default:
		writeCCError(w, errUnknownRequest())
	}
}

func (c *CC) serveRoot(w http.ResponseWriter) {
	base := c.URL()
	link := func(href string) map[string]any { return map[string]any{"href": href} }
	c.mu.Lock()
	version := c.apiVersion
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"links": map[string]any{
		"self":                link(base),
		"bits_service":        nil,
		"cloud_controller_v2": nil,
		"cloud_controller_v3": map[string]any{"href": base + "/v3", "meta": map[string]any{"version": version}},
		"network_policy_v0":   link(base + "/networking/v0/external"),
		"network_policy_v1":   link(base + "/networking/v1/external"),
		"login":               link(c.UAAURL()),
		"uaa":                 link(c.UAAURL()),
		"credhub":             nil,
		"routing":             link(base + "/routing"),
		"logging":             link(strings.Replace(base, "http", "ws", 1) + "/logging"),
		"log_cache":           link(base + "/log-cache"),
		"log_stream":          link(base + "/log-stream"),
		"app_ssh": map[string]any{"href": "127.0.0.1:2222", "meta": map[string]any{
			"host_key_fingerprint": "ccdouble-no-ssh", "oauth_client": "ssh-proxy"}},
	}})
}

func (c *CC) serveV3Root(w http.ResponseWriter) {
	base := c.URL() + "/v3"
	links := map[string]any{"self": map[string]string{"href": base}}
	for _, name := range []string{"app_usage_events", "apps", "audit_events", "buildpacks", "builds",
		"deployments", "domains", "droplets", "environment_variable_groups", "feature_flags", "info",
		"isolation_segments", "organizations", "organization_quotas", "packages", "processes",
		"resource_matches", "roles", "routes", "security_groups", "service_brokers", "service_instances",
		"service_credential_bindings", "service_offerings", "service_plans", "service_route_bindings",
		"service_usage_events", "sidecars", "spaces", "space_quotas", "stacks", "tasks", "users"} {
		links[name] = map[string]string{"href": base + "/" + name}
	}
	writeJSON(w, http.StatusOK, map[string]any{"links": links})
}

func (c *CC) serveInfo(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]any{
		"build":          "ccdouble",
		"cli_version":    map[string]any{"minimum": "", "recommended": ""},
		"custom":         map[string]any{},
		"description":    "Cloud Controller test double",
		"name":           "ccdouble",
		"version":        0,
		"osbapi_version": "2.15",
		"rate_limits":    map[string]any{"enabled": false, "general_limit": 0, "reset_interval_in_minutes": 0},
		"links": map[string]any{
			"self":    map[string]string{"href": c.URL() + "/v3/info"},
			"support": map[string]string{"href": ""},
		},
	})
}

// String identifies the double in test output.
func (c *CC) String() string { return fmt.Sprintf("ccdouble(%s)", c.URL()) }
