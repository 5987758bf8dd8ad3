// Package dev is `hottopic dev`: the whole system on one machine. It reads
// a Cloud Foundry manifest, runs an embedded JetStream server (or uses an
// existing one), runs the scaler on the local platform (dev/supervisor), and
// shows every process's output with CF-style prefixes.
package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-envparse"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/broker"
	"github.com/hottopic-io/hottopic/dev/console"
	"github.com/hottopic-io/hottopic/dev/manifest"
	"github.com/hottopic-io/hottopic/dev/state"
	"github.com/hottopic-io/hottopic/dev/supervisor"
	"github.com/hottopic-io/hottopic/internal/cfenv"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/internal/topic"
	"github.com/hottopic-io/hottopic/scaler"
)

// Defaults of the dev runtime. The intervals are shorter than the scaler's
// own defaults: the local platform is cheap to ask, and a newcomer should
// see scale-from-zero at once.
const (
	DefaultNATSPort          = state.DefaultNATSPort
	DefaultPollInterval      = 500 * time.Millisecond
	DefaultDiscoveryInterval = 2 * time.Second
)

// Options configure one run.
type Options struct {
	Manifest string // path of the CF manifest
	DataDir  string // default state.DefaultDir
	NATSPort int    // embedded server port, default DefaultNATSPort
	NATSURL  string // use this server instead of an embedded one
	Cluster  bool   // run a 3-node embedded cluster (child processes) instead of one server
	EnvFile  string // KEY=VALUE lines added to every app's environment

	PollInterval      time.Duration
	DiscoveryInterval time.Duration
	GracePeriod       time.Duration // per process on stop, default supervisor.DefaultGracePeriod

	// Executable runs this project's sidecar (`<Executable> sidecar`);
	// default: this very binary, so the code path is the production one.
	Executable string
	Out        io.Writer // default os.Stdout
}

const devSource = "[HOTTOPIC/DEV]"

// Run runs the manifest's apps until ctx ends, then stops everything:
// sidecars drain, apps stop, the server shuts down. A value on abort (a
// second Ctrl-C) kills what is still stopping instead of waiting.
func Run(ctx context.Context, o Options, abort <-chan struct{}) error {
	o = withDefaults(o)
	boundMemory()
	r := &runtime{o: o}
	defer r.cleanup()
	if err := r.prepare(); err != nil {
		return err
	}
	if err := r.startNATS(ctx); err != nil {
		return err
	}
	if r.setup != nil {
		if err := r.startBroker(ctx); err != nil {
			return err
		}
		r.con.Printf(devSource, "event buses, each a NATS account made by the broker: %s", describeBuses(r.buses, r.m))
	}
	if err := r.startApps(ctx); err != nil {
		return err
	}
	r.con.Printf(devSource, "ready: %s; dashboard %s/, scaler API %s. Publish with `hottopic publish TOPIC DATA`%s, see mappings with `hottopic events`; Ctrl-C stops", describe(r.m), r.scaler.URL(), r.scaler.URL(), serviceHint(r.buses))
	<-ctx.Done()
	r.stop(abort)
	return nil
}

// MemoryLimit is the soft memory limit of the hottopic dev process (its Go
// runtime's, see runtime/debug.SetMemoryLimit) unless GOMEMLIMIT sets one.
// The process holds the embedded NATS server: under a publish burst its
// file store keeps the 4 MB message blocks it used in the last 10 s and
// each Nats-Msg-Id of the stream's duplicate window (see DuplicateWindow),
// and the collector lets the heap reach twice what was live before
// collecting, so the process kept about twice its peak live heap long after
// the burst. With the limit the collector runs earlier instead
// (docs/reliability.md has the figures).
const MemoryLimit = 64 << 20

// DuplicateWindow is the de-duplication window of the topic streams the dev
// runtime makes on its own servers. The server keeps every Nats-Msg-Id of
// the window in memory (about 100 bytes each), so its memory grows with the
// publish rate times the window: with the server's 2 min default, 500 000
// events published with ids in a minute held 52 MB live in the dev process
// for two minutes, 240 MB of heap with the collector's headroom. 10 s, the
// same as the file store keeps a burst's blocks, bounds that to what ten
// seconds of publishing can send, and covers a publisher's retry after a
// lost acknowledgement (a client's default timeout is 5 s).
const DuplicateWindow = 10 * time.Second

// streamOptions are the options of the streams a run makes: the
// environment's, with DuplicateWindow when the runtime runs its own servers.
func streamOptions(o Options) (provision.StreamOptions, error) {
	so, err := provision.DefaultStreamOptions()
	if o.NATSURL == "" {
		so.Duplicates = DuplicateWindow
	}
	return so, err
}

func boundMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(MemoryLimit)
	}
}

// runtime is one run of the dev runtime; its steps are Run's.
type runtime struct {
	o       Options
	m       *manifest.Manifest
	fileEnv map[string]string
	exe     string
	con     *console.Console
	streams provision.StreamOptions

	natsURL string
	setup   *broker.Setup     // the broker's keys and accounts; nil without a broker
	buses   []*bus            // one without a broker
	vcap    map[string]string // VCAP_SERVICES by app name (broker only)
	apps    []supervisor.App
	sup     *supervisor.Supervisor
	scaler  *scaler.Service

	scDone, supDone     chan struct{}
	stopScaler, stopSup context.CancelFunc
	cleanups            []func() // run in reverse order
}

func (r *runtime) onCleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *runtime) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// prepare reads everything the run needs before anything starts.
func (r *runtime) prepare() error {
	var err error
	if r.m, err = manifest.Load(r.o.Manifest); err != nil {
		return err
	}
	if r.fileEnv, err = loadEnvFile(r.o.EnvFile); err != nil {
		return err
	}
	if r.streams, err = streamOptions(r.o); err != nil {
		return err
	}
	if st, err := state.Read(r.o.DataDir); err == nil {
		return fmt.Errorf("hottopic dev is already running from %s (pid %d): stop it first, or use another --data-dir", r.o.DataDir, st.PID)
	}
	if err := os.MkdirAll(r.o.DataDir, 0o755); err != nil {
		return fmt.Errorf("data directory %s: %v", r.o.DataDir, errors.Unwrap(err))
	}
	if r.exe = r.o.Executable; r.exe == "" {
		if r.exe, err = os.Executable(); err != nil {
			return fmt.Errorf("cannot find this executable to run the sidecar: %v", err)
		}
	}
	r.con = console.New(r.o.Out)
	if n := r.m.IgnoredNotice(); n != "" {
		r.con.Line(devSource, n)
	}
	return nil
}

// startNATS starts the embedded server, or a cluster of child processes with
// --cluster (unless --nats), and connects to it.
func (r *runtime) startNATS(ctx context.Context) error {
	r.natsURL = r.o.NATSURL
	if r.o.Cluster && r.natsURL != "" {
		return fmt.Errorf("--cluster runs its own NATS nodes; it cannot be combined with --nats")
	}
	if r.o.Cluster {
		cl, err := startCluster(r.exe, r.o.DataDir, r.o.NATSPort, r.con)
		if err != nil {
			return err
		}
		r.onCleanup(func() {
			cl.Stop()
			r.con.Line(devSource, "NATS cluster stopped")
		})
		r.natsURL = cl.URLs()
		r.con.Printf(devSource, "NATS JetStream cluster of %d nodes (storage %s): %s; kill -9 a node's pid to watch it die (it is started again)",
			ClusterSize, filepath.Join(r.o.DataDir, "cluster"), cl.Describe())
	} else if r.natsURL == "" {
		var err error
		if r.setup, err = broker.EnsureInit(brokerSetupDir(r.o.DataDir), broker.InitOptions{Port: r.o.NATSPort}); err != nil {
			return fmt.Errorf("broker setup in %s: %v", brokerSetupDir(r.o.DataDir), err)
		}
		// An earlier hottopic dev kept one bus in the server's global account,
		// which a server in operator mode does not serve (looked at before
		// the server starts: it may tidy the directory).
		legacyDir := filepath.Join(r.o.DataDir, "jetstream", "$G")
		legacy := dirExists(legacyDir)
		srv, err := startNATSConf(r.o.DataDir, r.o.NATSPort, r.setup.ServerConf, r.con)
		if err != nil {
			return err
		}
		r.onCleanup(func() {
			srv.Shutdown()
			srv.WaitForShutdown()
			r.con.Line(devSource, "NATS server stopped")
		})
		r.natsURL = srv.ClientURL()
		r.con.Printf(devSource, "NATS JetStream listening on %s (storage %s)", r.natsURL, filepath.Join(r.o.DataDir, "jetstream"))
		if legacy {
			r.con.Printf(devSource, "%s holds the streams of an earlier hottopic dev without event buses: events still queued there are not delivered (remove it when you no longer need them)", legacyDir)
		}
	}
	cfg, err := cfenv.NATSFromURL(r.natsURL)
	if err != nil {
		return fmt.Errorf("--nats: %v", err)
	}
	if r.o.NATSURL != "" {
		r.con.Printf(devSource, "using the NATS JetStream server at %s", strings.Join(redacted(cfg.URLs), ","))
	}
	if r.setup != nil {
		r.buses = planBuses(r.m) // connected by startBroker
		return nil
	}
	// One bus: the server itself, for every app.
	one := &bus{service: ImplicitService, implicit: true}
	for i := range r.m.Apps {
		one.apps = append(one.apps, i)
	}
	if err := one.connect(ctx, cfg, "hottopic-dev"); err != nil {
		return err
	}
	r.onCleanup(one.nc.Close)
	r.buses = []*bus{one}
	return nil
}

// startApps provisions the mapped apps, then starts the supervisor (which
// runs the instances), the scaler and the dead-letter watch, and records the
// run for `hottopic publish` and `hottopic events`.
func (r *runtime) startApps(ctx context.Context) error {
	r.apps = supervisorApps(r.m, r.fileEnv, r.exe, r.con)
	for i := range r.apps {
		r.apps[i].VCAPServices = r.vcap[r.apps[i].Name]
	}
	for _, b := range r.buses {
		if err := provisionApps(ctx, b.js, r.apps, r.m, b.apps, r.streams); err != nil {
			return err
		}
	}
	var err error
	if r.sup, err = supervisor.New(supervisor.Config{Console: r.con, NATSURL: r.natsURL, GracePeriod: r.o.GracePeriod}, r.apps); err != nil {
		return err
	}
	// The scaler API on a free loopback port, for `hottopic events`: the
	// person at the keyboard owns it, so it takes no token.
	logger := slog.New(r.con.Handler("[HOTTOPIC/SCALER]", console.Verbatim("scaled "), console.Hide("app_guid", "instance")))
	if r.scaler, err = scaler.Listen("127.0.0.1:0", logger, scaler.OwnerAccess()); err != nil {
		return err
	}
	r.onCleanup(r.scaler.Close)
	for _, b := range r.buses {
		dlq, err := watchDeadLetters(ctx, b.js, r.apps, r.con)
		if err != nil {
			return err
		}
		r.onCleanup(dlq.Stop)
	}
	st := state.State{PID: os.Getpid(), NATSURL: r.natsURL, ScalerURL: r.scaler.URL()}
	if r.setup != nil {
		st.Buses = stateBuses(r.buses, r.m)
	}
	if err := state.Write(r.o.DataDir, st); err != nil {
		return fmt.Errorf("cannot record the running dev runtime in %s: %v", r.o.DataDir, err)
	}
	r.onCleanup(func() { state.Remove(r.o.DataDir) })

	cfg, scOpts, err := r.scalerConfig()
	if err != nil {
		return err
	}
	scCtx, stopScaler := context.WithCancel(context.Background())
	supCtx, stopSup := context.WithCancel(context.Background())
	r.stopScaler, r.stopSup = stopScaler, stopSup
	r.onCleanup(stopScaler)
	r.onCleanup(stopSup)
	r.scDone, r.supDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.scDone)
		err := r.scaler.Run(scCtx, cfg, r.sup, append([]scaler.Option{
			scaler.WithPollInterval(r.o.PollInterval),
			scaler.WithDiscoveryInterval(r.o.DiscoveryInterval),
			scaler.WithStreamOptions(r.streams),
			scaler.WithInstanceID(fmt.Sprintf("dev-%d", os.Getpid()))}, scOpts...)...)
		if err != nil {
			r.con.Printf(devSource, "scaler stopped: %v", err)
		}
	}()
	go func() {
		defer close(r.supDone)
		_ = r.sup.Run(supCtx)
	}()
	return nil
}

// scalerConfig is where the scaler connects: the one server without a
// broker; with it, the internal account, where the broker's state tells it
// which bus serves which app (it serves them all).
func (r *runtime) scalerConfig() (cfenv.NATS, []scaler.Option, error) {
	if r.setup == nil {
		cfg, err := cfenv.NATSFromURL(r.natsURL)
		return cfg, nil, err
	}
	cfg, access, err := r.setup.Scaler(r.natsURL)
	if err != nil {
		return cfg, nil, err
	}
	return cfg, []scaler.Option{scaler.WithBuses(access.StateKey)}, nil
}

// stop stops the scaler first, so that nothing is rescaled while instances
// stop, then the instances (sidecars drain first), then NATS connections.
func (r *runtime) stop(abort <-chan struct{}) {
	r.con.Line(devSource, "stopping: sidecars drain, then apps stop (Ctrl-C again to kill at once)")
	go func() {
		select {
		case <-abort:
			r.sup.Abort()
		case <-r.supDone:
		}
	}()
	r.stopScaler()
	<-r.scDone
	r.stopSup()
	<-r.supDone
	for _, b := range r.buses {
		b.drain()
	}
	r.con.Line(devSource, "all apps stopped")
}

func withDefaults(o Options) Options {
	if o.DataDir == "" {
		o.DataDir = state.DefaultDir
	}
	if o.NATSPort == 0 {
		o.NATSPort = DefaultNATSPort
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.DiscoveryInterval <= 0 {
		o.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	return o
}

func loadEnvFile(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("env file %s not found", path)
		}
		return nil, fmt.Errorf("env file %s: %v", path, errors.Unwrap(err))
	}
	defer f.Close()
	env, err := envparse.Parse(f)
	if err != nil {
		var pe *envparse.ParseError
		if errors.As(err, &pe) && pe.Line > 0 {
			return nil, fmt.Errorf("env file %s: line %d: %v", path, pe.Line, pe.Err)
		}
		return nil, fmt.Errorf("env file %s: %v", path, err)
	}
	return env, nil
}

// AppGUID is an app's GUID in the dev runtime: derived from its name, so a
// restart finds the same JetStream consumers and KV key.
func AppGUID(name string) string { return supervisor.NameUUID("dev/" + name) }

// supervisorApps turns manifest apps into instances to run. A sidecar whose
// command is hottopic-sidecar runs as `<this binary> sidecar`; a mapped app
// that declares none gets one anyway, as the buildpack would give it.
func supervisorApps(m *manifest.Manifest, fileEnv map[string]string, exe string, con *console.Console) []supervisor.App {
	var out []supervisor.App
	for _, a := range m.Apps {
		env := map[string]string{}
		for k, v := range a.Env {
			env[k] = v
		}
		for k, v := range fileEnv { // local values win over the manifest's
			env[k] = v
		}
		sa := supervisor.App{
			GUID: AppGUID(a.Name), Name: a.Name, Dir: a.Dir, Command: a.Command,
			Env: env, Instances: a.Instances,
			Mapped: a.Mapping != nil, Annotations: a.Annotations,
		}
		for _, s := range a.Sidecars {
			if s.IsHotTopic() {
				sa.Sidecars = append(sa.Sidecars, supervisor.Sidecar{
					Name: s.Name, Path: exe, Args: append([]string{"sidecar"}, strings.Fields(s.Command)[1:]...), Drains: true,
				})
				continue
			}
			sa.Sidecars = append(sa.Sidecars, supervisor.Sidecar{Name: s.Name, Command: s.Command})
		}
		if a.Mapping != nil && !a.HasHotTopicSidecar() {
			con.Printf(devSource, "app %s: running hottopic-sidecar beside each instance, as the hottopic buildpack declares it on Cloud Foundry", a.Name)
			sa.Sidecars = append(sa.Sidecars, supervisor.Sidecar{Name: "hottopic", Path: exe, Args: []string{"sidecar"}, Drains: true})
		}
		out = append(out, sa)
	}
	return out
}

// provisionApps creates the streams and consumers of the mapped apps of a
// bus (onBus: indexes of m.Apps) before the dev runtime says it is ready:
// an event published right after must not find a topic without a stream or
// a consumer (the scaler, which also keeps them, may not have run its first
// discovery yet).
func provisionApps(ctx context.Context, js jetstream.JetStream, apps []supervisor.App, m *manifest.Manifest, onBus []int, so provision.StreamOptions) error {
	if _, err := provision.EnsureDLQStream(ctx, js, so); err != nil {
		return err
	}
	for _, i := range onBus {
		a := m.Apps[i]
		if a.Mapping == nil {
			continue
		}
		for _, t := range a.Mapping.Topics {
			if _, err := provision.EnsureTopicStream(ctx, js, t, so); err != nil {
				return err
			}
			if _, err := provision.EnsureConsumer(ctx, js, apps[i].GUID, a.Name, t, a.Mapping.Settings); err != nil {
				return err
			}
		}
		if out := a.Mapping.OutputTopic; out != "" {
			if _, err := provision.EnsureTopicStream(ctx, js, out, so); err != nil {
				return err
			}
		}
	}
	return nil
}

// watchDeadLetters prints each dead letter once it is stored, so a
// developer sees poison events without a separate tool. An ordered consumer
// sees what the stream holds (a publish retried after a lost ack shows once).
func watchDeadLetters(ctx context.Context, js jetstream.JetStream, apps []supervisor.App, con *console.Console) (jetstream.ConsumeContext, error) {
	names := map[string]string{}
	for _, a := range apps {
		names[a.GUID] = a.Name
	}
	c, err := js.OrderedConsumer(ctx, topic.DLQStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, fmt.Errorf("watch dead letters: %v", err)
	}
	return c.Consume(func(msg jetstream.Msg) {
		h := msg.Headers()
		app := h.Get(provision.HeaderApp)
		if n, ok := names[app]; ok {
			app = n
		}
		con.Printf("[HOTTOPIC/DLQ]", "dead letter on %s for app %s after %s deliveries: %s (%d bytes: %s)",
			strings.TrimPrefix(msg.Subject(), topic.DLQPrefix), app, h.Get(provision.HeaderDeliveries),
			h.Get(provision.HeaderReason), len(msg.Data()), preview(msg.Data()))
	})
}

func preview(b []byte) string {
	const max = 60
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// describe summarises the manifest for the ready line.
func describe(m *manifest.Manifest) string {
	var parts []string
	for _, a := range m.Apps {
		if a.Mapping != nil {
			parts = append(parts, fmt.Sprintf("%s ← %s (%d–%d instances)", a.Name, strings.Join(a.Mapping.Topics, ","), a.Mapping.MinInstances, a.Mapping.MaxInstances))
		} else {
			parts = append(parts, fmt.Sprintf("%s (%d instances)", a.Name, a.Instances))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// serviceHint names the buses `hottopic publish --service` picks.
func serviceHint(buses []*bus) string {
	var named []string
	for _, b := range buses {
		if !b.implicit {
			named = append(named, b.service)
		}
	}
	if len(named) == 0 {
		return ""
	}
	return fmt.Sprintf(" (add `--service NAME` for %s)", strings.Join(named, ", "))
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func redacted(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = cfenv.RedactURL(u)
	}
	return out
}
