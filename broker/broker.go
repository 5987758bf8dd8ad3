// Package broker is Hot Topic's Open Service Broker (API 2.17, through
// code.cloudfoundry.org/brokerapi/v13): a service instance is an isolated
// event bus, implemented as a NATS account in operator mode; a binding is a
// user of that account whose permissions NATS itself enforces. The broker
// keeps its state in JetStream KV (state.go) and is otherwise stateless.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"code.cloudfoundry.org/brokerapi/v13"
	"code.cloudfoundry.org/brokerapi/v13/domain"
	"code.cloudfoundry.org/brokerapi/v13/domain/apiresponses"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/hottopic-io/hottopic/internal/buses"
)

// Catalog IDs: stable, since Cloud Controller stores them.
const (
	ServiceID   = "6b4b7f0e-5d2c-4f43-9e0a-3f3c9f1b2c10"
	ServiceName = "hottopic"
	PlanID      = "a2c3d1e4-7b6f-4c1a-8e5d-0f9e8d7c6b51"
	PlanName    = "standard"
)

// Broker implements domain.ServiceBroker.
type Broker struct {
	cfg      Config
	sys      *nats.Conn // the system account: pushes account JWTs
	internal *nats.Conn // the internal account: the state
	st       *store
	log      *slog.Logger

	mu    sync.Mutex             // serialises changes of one bus within this instance
	locks map[string]*sync.Mutex // (across instances the KV revisions do)
}

// New connects to NATS twice (system and internal account, as users minted
// from the configured signing keys) and opens the state buckets.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	sysOpt, err := userOption("hottopic-broker", cfg.SystemAccount, cfg.SystemSigner)
	if err != nil {
		return nil, err
	}
	intOpt, err := userOption("hottopic-broker", cfg.InternalAccount, cfg.InternalSigner)
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, log: log, locks: map[string]*sync.Mutex{}}
	if b.sys, err = connect(ctx, cfg, "hottopic-broker/sys", sysOpt); err != nil {
		return nil, err
	}
	if b.internal, err = connect(ctx, cfg, "hottopic-broker", intOpt); err != nil {
		b.sys.Close()
		return nil, err
	}
	js, err := jetstream.New(b.internal)
	if err != nil {
		b.Close()
		return nil, err
	}
	// Servers started with the broker may not have elected a JetStream meta
	// leader yet, and do not answer until they have: each attempt is short.
	b.st, err = retrying(ctx, func() (*store, error) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return openStore(actx, js, replicas(b.internal), cfg.StateKey)
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	b.st.buses, b.st.bindings = retryKV{b.st.buses}, retryKV{b.st.bindings}
	return b, nil
}

// Close closes the NATS connections.
func (b *Broker) Close() {
	if b.sys != nil {
		b.sys.Close()
	}
	if b.internal != nil {
		b.internal.Close()
	}
}

// Handler is the OSB API behind HTTP basic auth.
func (b *Broker) Handler() http.Handler {
	return brokerapi.New(b, b.log, brokerapi.BrokerCredentials{Username: b.cfg.Username, Password: b.cfg.Password})
}

func (b *Broker) lock(id string) func() {
	b.mu.Lock()
	l := b.locks[id]
	if l == nil {
		l = &sync.Mutex{}
		b.locks[id] = l
	}
	b.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Services is the catalog.
func (b *Broker) Services(context.Context) ([]domain.Service, error) {
	return []domain.Service{{
		ID:                   ServiceID,
		Name:                 ServiceName,
		Description:          "Hot Topic event bus: an isolated NATS JetStream account for event-driven functions",
		Bindable:             true,
		InstancesRetrievable: false,
		BindingsRetrievable:  false,
		PlanUpdatable:        false,
		Tags:                 []string{"hottopic", "nats", "events"},
		Metadata:             &domain.ServiceMetadata{DisplayName: "Hot Topic", LongDescription: "Topics, consumers and mappings of an event bus are visible only to the apps bound to it."},
		Plans: []domain.ServicePlan{{
			ID:          PlanID,
			Name:        PlanName,
			Description: "An event bus: a NATS account with JetStream; at most " + b.cfg.BusLimits.String(),
			Free:        domain.FreeValue(true),
			Bindable:    domain.BindableValue(true),
		}},
	}}, nil
}

// ids are OSB instance and binding IDs the broker accepts: they become KV
// keys and subject tokens, so only [A-Za-z0-9_-].
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func badRequest(key, format string, args ...any) error {
	return apiresponses.NewFailureResponse(fmt.Errorf(format, args...), http.StatusBadRequest, key)
}

func checkID(what, id string) error {
	if !idPattern.MatchString(id) {
		return badRequest("invalid-"+what+"-id", "%s id %q must be 1 to 64 characters of A-Z a-z 0-9 _ -", what, id)
	}
	return nil
}

// provisionParams are the parameters of cf create-service -c.
type provisionParams struct {
	Topics []string `json:"topics"`
}

func parseProvisionParams(raw json.RawMessage) (provisionParams, error) {
	var p provisionParams
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, badRequest("invalid-parameters", `parameters must be {"topics": ["orders.created", "orders.>"]}: %s`, strings.TrimPrefix(err.Error(), "json: "))
	}
	seen := map[string]bool{}
	var out []string
	for _, t := range p.Topics {
		if err := ValidateTopicPattern(t); err != nil {
			return p, badRequest("invalid-parameters", "parameter topics: %s", err)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	p.Topics = out
	return p, nil
}

// Provision creates a bus: a new account key, its JWT pushed to the
// resolvers, a scaler credential, and the record. A failure leaves neither an
// account nor a record behind.
func (b *Broker) Provision(ctx context.Context, id string, d domain.ProvisionDetails, _ bool) (domain.ProvisionedServiceSpec, error) {
	if err := checkID("instance", id); err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	params, err := parseProvisionParams(d.RawParameters)
	if err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	defer b.lock(id)()
	// The same request again is answered 200, another one for the ID 409.
	same := func(old *Bus) (domain.ProvisionedServiceSpec, error) {
		if old.PlanID == d.PlanID && old.SpaceGUID == d.SpaceGUID && old.OrgGUID == d.OrganizationGUID && equalStrings(old.Topics, params.Topics) && !old.Deleting {
			return domain.ProvisionedServiceSpec{AlreadyExists: true}, nil
		}
		return domain.ProvisionedServiceSpec{}, apiresponses.ErrInstanceAlreadyExists
	}
	exists := func() (domain.ProvisionedServiceSpec, error) {
		old, _, ok, err := b.st.bus(ctx, id)
		if err != nil || !ok {
			return domain.ProvisionedServiceSpec{}, err
		}
		return same(old)
	}
	if spec, err := exists(); err != nil || spec.AlreadyExists {
		return spec, err
	}
	akp, err := nkeys.CreateAccount()
	if err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	apub, _ := akp.PublicKey()
	skp, err := nkeys.CreateAccount()
	if err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	spub, _ := skp.PublicKey()
	sseed, _ := skp.Seed()
	scalerCreds, _, err := issueUser("hottopic-scaler", apub, skp, jwt.Permissions{})
	if err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	bus := &Bus{
		ID: id, PlanID: d.PlanID, OrgGUID: d.OrganizationGUID, SpaceGUID: d.SpaceGUID,
		Account: apub, SigningKey: spub, Topics: params.Topics, Revoked: map[string]int64{},
	}
	if bus.Topics == nil {
		bus.Topics = []string{}
	}
	// Cloud Foundry names the instance in the context (OSB 2.15+); the
	// scaler shows it in a mapping's "cf bind-service" hint.
	var pc struct {
		InstanceName string `json:"instance_name"`
	}
	if json.Unmarshal(d.RawContext, &pc) == nil {
		bus.Name = pc.InstanceName
	}
	bus.SigningSeed = b.st.Seal(string(sseed), buses.SealedAt(id, buses.FieldSigningSeed))
	bus.ScalerCreds = b.st.Seal(scalerCreds, buses.SealedAt(id, buses.FieldScalerCreds))
	token, err := accountJWT(bus, b.cfg.BusLimits, b.cfg.OperatorSigner)
	if err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	// The record first (it reserves the ID across broker instances), then
	// the account; undo the record when the push fails.
	if _, err := b.st.putBus(ctx, bus, 0); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Another broker instance took the ID meanwhile.
			old, err := b.awaitBus(ctx, id)
			if err != nil {
				return domain.ProvisionedServiceSpec{}, err
			}
			return same(old)
		}
		return domain.ProvisionedServiceSpec{}, fmt.Errorf("store bus %s: %w", id, err)
	}
	if err := pushAccount(ctx, b.sys, token); err != nil {
		_ = b.st.buses.Purge(context.WithoutCancel(ctx), id)
		return domain.ProvisionedServiceSpec{}, fmt.Errorf("create the account of bus %s: %w", id, err)
	}
	// The resolver stores any well-formed JWT; only a connection proves that
	// the servers trust the account (a wrong operator signing key shows here).
	if err := b.tryAccount(scalerCreds); err != nil {
		bg := context.WithoutCancel(ctx)
		_ = deleteAccount(bg, b.sys, apub, b.cfg.OperatorSigner)
		_ = b.st.buses.Purge(bg, id)
		return domain.ProvisionedServiceSpec{}, fmt.Errorf("the NATS servers do not accept the account of bus %s (is %s a signing key of their operator?): %w", id, EnvOperatorSigningKey, err)
	}
	if err := b.awaitJetStream(ctx, scalerCreds); err != nil {
		return domain.ProvisionedServiceSpec{}, fmt.Errorf("bus %s: %w", id, err)
	}
	b.log.Info("provisioned bus", "instance", id, "account", apub, "topics", strings.Join(bus.Topics, ","))
	return domain.ProvisionedServiceSpec{}, nil
}

// awaitBus reads a bus the state's leader says exists. Reads may be served
// by a replica that has not applied the write yet (KV gets are direct), so
// not finding it is read again for a while.
func (b *Broker) awaitBus(ctx context.Context, id string) (*Bus, error) {
	deadline := time.Now().Add(retryFor)
	for {
		old, _, ok, err := b.st.bus(ctx, id)
		switch {
		case err != nil:
			return nil, err
		case ok:
			return old, nil
		case time.Now().After(deadline):
			return nil, fmt.Errorf("bus %s: the state refuses to create it as existing, yet no read finds it", id)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tryAccount connects once with creds, without retrying.
func (b *Broker) tryAccount(creds string) error {
	nc, err := b.dialAs(creds, strings.Join(b.cfg.NATS.URLs, ","))
	if err != nil {
		return err
	}
	nc.Close()
	return nil
}

// dialAs connects once to url with creds, to check the account there.
func (b *Broker) dialAs(creds, url string) (*nats.Conn, error) {
	opt, err := credsOption(creds)
	if err != nil {
		return nil, err
	}
	opts := append(append([]nats.Option{nats.Name("hottopic-broker/check"), nats.Timeout(10 * time.Second)}, b.cfg.NATS.Options...), opt)
	return nats.Connect(url, opts...)
}

// awaitJetStream returns once every server that can be reached serves
// JetStream to the new account. The resolver push returns on the first
// server's answer; another may answer 503 "JetStream not enabled for
// account" for a moment after, which would fail the first stream an app or
// the scaler makes right after provisioning. A server that cannot be
// reached (down) is passed over: it takes the account from the others when
// it is back, and whoever connects to it then finds JetStream on.
func (b *Broker) awaitJetStream(ctx context.Context, creds string) error {
	for _, url := range b.cfg.NATS.URLs {
		nc, err := b.dialAs(creds, url)
		if err != nil {
			b.log.Debug("not checked for the new account: cannot connect", "url", url, "error", err)
			continue
		}
		js, err := jetstream.New(nc)
		if err == nil {
			_, err = retrying(ctx, func() (*jetstream.AccountInfo, error) { return js.AccountInfo(ctx) })
		}
		nc.Close()
		if err != nil {
			return fmt.Errorf("JetStream at %s does not serve the new account: %w", url, err)
		}
	}
	return nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (b *Broker) mustBus(ctx context.Context, id string, missing error) (*Bus, uint64, error) {
	bus, rev, ok, err := b.st.bus(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	if !ok {
		return nil, 0, missing
	}
	return bus, rev, nil
}

var errInstanceMissing = apiresponses.NewFailureResponse(errors.New("instance does not exist"), http.StatusNotFound, "instance-not-found")

// Bind issues a user of the bus account: for an app (bind_resource.app_guid)
// the sidecar's permissions, for a service key (no app) publish only.
func (b *Broker) Bind(ctx context.Context, instanceID, bindingID string, d domain.BindDetails, _ bool) (domain.Binding, error) {
	if err := checkID("binding", bindingID); err != nil {
		return domain.Binding{}, err
	}
	if len(d.RawParameters) > 0 && string(d.RawParameters) != "null" && string(d.RawParameters) != "{}" {
		return domain.Binding{}, badRequest("invalid-parameters", "binding takes no parameters")
	}
	defer b.lock(instanceID)()
	bus, _, err := b.mustBus(ctx, instanceID, errInstanceMissing)
	if err != nil {
		return domain.Binding{}, err
	}
	if bus.Deleting {
		return domain.Binding{}, apiresponses.NewFailureResponse(fmt.Errorf("bus %s is being deleted", instanceID), http.StatusUnprocessableEntity, "instance-deleting")
	}
	appGUID := d.AppGUID
	if d.BindResource != nil && d.BindResource.AppGuid != "" {
		appGUID = d.BindResource.AppGuid
	}
	if appGUID != "" && !idPattern.MatchString(appGUID) {
		return domain.Binding{}, badRequest("invalid-app-guid", "bind_resource.app_guid %q must be 1 to 64 characters of A-Z a-z 0-9 _ -", appGUID)
	}
	if _, ok, err := b.st.binding(ctx, instanceID, bindingID); err != nil {
		return domain.Binding{}, err
	} else if ok {
		// The credentials are not kept, so they cannot be handed out again.
		return domain.Binding{}, apiresponses.ErrBindingAlreadyExists
	}
	seed, err := b.st.Open(bus.SigningSeed, buses.SealedAt(bus.ID, buses.FieldSigningSeed))
	if err != nil {
		return domain.Binding{}, fmt.Errorf("bus %s: %w", bus.ID, err)
	}
	akp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return domain.Binding{}, fmt.Errorf("bus %s: signing key: %w", bus.ID, err)
	}
	perms, kind := keyPermissions(bus, bindingID), "service-key"
	if appGUID != "" {
		perms, kind = appPermissions(bus, appGUID, bindingID), "app"
	}
	creds, userPub, err := issueUser("hottopic-"+kind+"-"+bindingID, bus.Account, akp, perms, "binding:"+bindingID, "kind:"+kind)
	if err != nil {
		return domain.Binding{}, err
	}
	rec := &Binding{ID: bindingID, BusID: instanceID, Account: bus.Account, User: userPub, AppGUID: appGUID, InboxPrefix: InboxPrefix(bindingID)}
	v, _ := json.Marshal(rec)
	if _, err := b.st.bindings.Create(ctx, bindingKey(instanceID, bindingID), v); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return domain.Binding{}, apiresponses.ErrBindingAlreadyExists
		}
		return domain.Binding{}, fmt.Errorf("store binding %s: %w", bindingID, err)
	}
	b.log.Info("bound", "instance", instanceID, "binding", bindingID, "kind", kind, "app_guid", appGUID, "user", userPub)
	credentials := map[string]any{
		"uri":          b.cfg.BindingURLs[0],
		"urls":         strings.Join(b.cfg.BindingURLs, ","),
		"creds":        creds,
		"inbox_prefix": rec.InboxPrefix,
		"account":      bus.Account,
	}
	if b.cfg.NATS.CACert != "" {
		credentials["ca_cert"] = b.cfg.NATS.CACert
	}
	return domain.Binding{Credentials: credentials}, nil
}

// Unbind revokes the binding's user in the account JWT and pushes it: the
// servers refuse new connections with it and close open ones.
func (b *Broker) Unbind(ctx context.Context, instanceID, bindingID string, _ domain.UnbindDetails, _ bool) (domain.UnbindSpec, error) {
	defer b.lock(instanceID)()
	if _, _, err := b.mustBus(ctx, instanceID, apiresponses.ErrInstanceDoesNotExist); err != nil {
		return domain.UnbindSpec{}, err
	}
	rec, ok, err := b.st.binding(ctx, instanceID, bindingID)
	if err != nil {
		return domain.UnbindSpec{}, err
	}
	if !ok {
		return domain.UnbindSpec{}, apiresponses.ErrBindingDoesNotExist
	}
	if err := b.revoke(ctx, instanceID, rec.User); err != nil {
		return domain.UnbindSpec{}, fmt.Errorf("revoke binding %s: %w", bindingID, err)
	}
	if err := b.st.bindings.Purge(ctx, bindingKey(instanceID, bindingID)); err != nil {
		return domain.UnbindSpec{}, fmt.Errorf("remove binding %s: %w", bindingID, err)
	}
	b.log.Info("unbound", "instance", instanceID, "binding", bindingID, "user", rec.User)
	return domain.UnbindSpec{}, nil
}

// revokeAttempts bounds how often revoke retries a bus record that another
// broker instance changed meanwhile.
const revokeAttempts = 10

// revoke records the revocation of user in the bus record, then pushes the
// account JWT. The record comes first: a push that fails is retried by the
// next unbind (Cloud Controller retries), and no later push of this bus can
// forget it. Another broker instance may unbind on the same bus at the same
// time: a compare-and-swap that loses is retried on the newer record, and the
// JWT is pushed again until the record pushed is still the newest afterwards,
// so the JWT the servers keep last holds every revocation.
func (b *Broker) revoke(ctx context.Context, busID, user string) error {
	for range revokeAttempts {
		bus, rev, err := b.mustBus(ctx, busID, apiresponses.ErrInstanceDoesNotExist)
		if err != nil {
			return err
		}
		if _, done := bus.Revoked[user]; !done {
			bus.Revoked[user] = time.Now().Unix()
			if rev, err = b.st.putBus(ctx, bus, rev); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			} else if err != nil {
				return fmt.Errorf("record the revocation: %w", err)
			}
		}
		if err := b.push(ctx, bus); err != nil {
			return err
		}
		if _, now, ok, err := b.st.bus(ctx, busID); err != nil {
			return err
		} else if !ok || now == rev {
			return nil
		}
	}
	return fmt.Errorf("bus %s changed %d times while revoking: try again", busID, revokeAttempts)
}

// push signs and pushes the bus's account JWT. A node that missed an update
// (down at the time) takes the JWT from the others when they compare, the
// newer by issue time in whole seconds, and on a tie either one. So push
// first waits for the next second: its JWT is newer than every JWT of the bus
// pushed before it began, and no node can bring back an older one (which
// would undo a revocation).
func (b *Broker) push(ctx context.Context, bus *Bus) error {
	select {
	case <-time.After(time.Until(time.Now().Truncate(time.Second).Add(time.Second))):
	case <-ctx.Done():
		return ctx.Err()
	}
	token, err := accountJWT(bus, b.cfg.BusLimits, b.cfg.OperatorSigner)
	if err != nil {
		return err
	}
	return pushAccount(ctx, b.sys, token)
}

// Deprovision removes the bus's streams (topics, dead letters, the mapping
// bucket and with them every consumer) and revokes every user of the account
// (which stays, unusable). Refused with 422 while bindings exist.
func (b *Broker) Deprovision(ctx context.Context, id string, _ domain.DeprovisionDetails, _ bool) (domain.DeprovisionServiceSpec, error) {
	defer b.lock(id)()
	bus, rev, err := b.mustBus(ctx, id, apiresponses.ErrInstanceDoesNotExist)
	if err != nil {
		return domain.DeprovisionServiceSpec{}, err
	}
	keys, err := b.st.bindingsOf(ctx, id)
	if err != nil {
		return domain.DeprovisionServiceSpec{}, fmt.Errorf("list the bindings of bus %s: %w", id, err)
	}
	if len(keys) > 0 {
		return domain.DeprovisionServiceSpec{}, apiresponses.NewFailureResponseBuilder(
			fmt.Errorf("bus %s still has %d binding(s) or service key(s): unbind them first", id, len(keys)),
			http.StatusUnprocessableEntity, "bindings-exist").WithErrorKey("BindingsExist").Build()
	}
	if !bus.Deleting {
		bus.Deleting = true
		if rev, err = b.st.putBus(ctx, bus, rev); err != nil {
			return domain.DeprovisionServiceSpec{}, fmt.Errorf("mark bus %s deleting: %w", id, err)
		}
	}
	// A retry after a failure further down finds "*" revoked: the streams are
	// gone then, and the scaler's credentials may no longer connect.
	if _, revokedAll := bus.Revoked[jwt.All]; !revokedAll {
		// The scaler's user goes first: a scaler still serving the bus
		// (it stops once it sees Deleting, a moment later) could otherwise
		// make its buckets again while the streams are deleted.
		if rev, err = b.revokeScaler(ctx, bus, rev); err != nil {
			return domain.DeprovisionServiceSpec{}, err
		}
		if err := b.removeStreams(ctx, bus); err != nil {
			return domain.DeprovisionServiceSpec{}, err
		}
		bus.Revoked[jwt.All] = time.Now().Unix()
		if _, err = b.st.putBus(ctx, bus, rev); err != nil {
			return domain.DeprovisionServiceSpec{}, fmt.Errorf("record the revocation of bus %s: %w", id, err)
		}
	}
	// The account's JWT stays in the resolvers, every user revoked, rather
	// than being deleted: a node that was down meanwhile takes this newer JWT
	// from the others, whereas after a delete it would keep its old one (its
	// users valid) and hand it back to the others.
	if err := b.push(ctx, bus); err != nil {
		return domain.DeprovisionServiceSpec{}, fmt.Errorf("revoke the users of bus %s: %w", id, err)
	}
	if err := b.st.buses.Purge(ctx, id); err != nil {
		return domain.DeprovisionServiceSpec{}, fmt.Errorf("remove bus %s: %w", id, err)
	}
	b.log.Info("deprovisioned bus", "instance", id, "account", bus.Account)
	return domain.DeprovisionServiceSpec{}, nil
}

// revokeScaler revokes the bus's scaler user (its connections close) and
// records it; it returns the bus record's new revision.
func (b *Broker) revokeScaler(ctx context.Context, bus *Bus, rev uint64) (uint64, error) {
	creds, err := b.st.Open(bus.ScalerCreds, buses.SealedAt(bus.ID, buses.FieldScalerCreds))
	if err != nil {
		return rev, fmt.Errorf("bus %s: %w", bus.ID, err)
	}
	raw, err := jwt.ParseDecoratedJWT([]byte(creds))
	if err != nil {
		return rev, fmt.Errorf("bus %s: scaler credentials: %w", bus.ID, err)
	}
	uc, err := jwt.DecodeUserClaims(raw)
	if err != nil {
		return rev, fmt.Errorf("bus %s: scaler credentials: %w", bus.ID, err)
	}
	if _, done := bus.Revoked[uc.Subject]; done {
		return rev, nil
	}
	if bus.Revoked == nil {
		bus.Revoked = map[string]int64{}
	}
	bus.Revoked[uc.Subject] = time.Now().Unix()
	if rev, err = b.st.putBus(ctx, bus, rev); err != nil {
		return rev, fmt.Errorf("record the revocation of bus %s's scaler: %w", bus.ID, err)
	}
	if err := b.push(ctx, bus); err != nil {
		return rev, fmt.Errorf("revoke the scaler of bus %s: %w", bus.ID, err)
	}
	return rev, nil
}

// removeStreams deletes every stream of the bus account, as a new user
// signed with the bus's signing key (the scaler's is revoked by now).
func (b *Broker) removeStreams(ctx context.Context, bus *Bus) error {
	seed, err := b.st.Open(bus.SigningSeed, buses.SealedAt(bus.ID, buses.FieldSigningSeed))
	if err != nil {
		return fmt.Errorf("bus %s: %w", bus.ID, err)
	}
	akp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return fmt.Errorf("bus %s: signing key: %w", bus.ID, err)
	}
	opt, err := userOption("hottopic-broker-deprovision", bus.Account, akp)
	if err != nil {
		return fmt.Errorf("bus %s: %w", bus.ID, err)
	}
	nc, err := connect(ctx, b.cfg, "hottopic-broker/deprovision", opt)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	names := js.StreamNames(ctx)
	var all []string
	for n := range names.Name() {
		all = append(all, n)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list the streams of bus %s: %w", bus.ID, err)
	}
	for _, n := range all {
		if err := js.DeleteStream(ctx, n); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete stream %s of bus %s: %w", n, bus.ID, err)
		}
	}
	return nil
}

// GetInstance is not offered (instances_retrievable: false).
func (b *Broker) GetInstance(context.Context, string, domain.FetchInstanceDetails) (domain.GetInstanceDetailsSpec, error) {
	return domain.GetInstanceDetailsSpec{}, errNotSupported("fetching a service instance")
}

// Update changes a bus's topics (cf update-service -c '{"topics": [...]}'),
// the one parameter; there is one plan. Bindings made from then on may
// publish to the new topics; existing ones keep the permissions they were
// issued with (their JWTs are signed), so an app binds again to get them.
func (b *Broker) Update(ctx context.Context, id string, d domain.UpdateDetails, _ bool) (domain.UpdateServiceSpec, error) {
	if d.PlanID != "" && d.PlanID != PlanID {
		return domain.UpdateServiceSpec{}, badRequest("plan-change-not-supported", "plan %q: the service has one plan, %s", d.PlanID, PlanName)
	}
	params, err := parseProvisionParams(d.RawParameters)
	if err != nil {
		return domain.UpdateServiceSpec{}, err
	}
	if len(d.RawParameters) == 0 || string(d.RawParameters) == "null" {
		return domain.UpdateServiceSpec{}, nil
	}
	defer b.lock(id)()
	bus, rev, err := b.mustBus(ctx, id, errInstanceMissing)
	if err != nil {
		return domain.UpdateServiceSpec{}, err
	}
	if bus.Deleting {
		return domain.UpdateServiceSpec{}, apiresponses.NewFailureResponse(fmt.Errorf("bus %s is being deleted", id), http.StatusUnprocessableEntity, "instance-deleting")
	}
	if params.Topics == nil {
		params.Topics = []string{}
	}
	if equalStrings(bus.Topics, params.Topics) {
		return domain.UpdateServiceSpec{}, nil
	}
	bus.Topics = params.Topics
	if _, err := b.st.putBus(ctx, bus, rev); err != nil {
		return domain.UpdateServiceSpec{}, fmt.Errorf("update bus %s: %w", id, err)
	}
	b.log.Info("updated bus", "instance", id, "topics", strings.Join(bus.Topics, ","))
	return domain.UpdateServiceSpec{}, nil
}

// LastOperation: every operation is synchronous.
func (b *Broker) LastOperation(context.Context, string, domain.PollDetails) (domain.LastOperation, error) {
	return domain.LastOperation{}, errNotSupported("asynchronous operations")
}

// GetBinding is not offered (bindings_retrievable: false).
func (b *Broker) GetBinding(context.Context, string, string, domain.FetchBindingDetails) (domain.GetBindingSpec, error) {
	return domain.GetBindingSpec{}, errNotSupported("fetching a binding")
}

// LastBindingOperation: every operation is synchronous.
func (b *Broker) LastBindingOperation(context.Context, string, string, domain.PollDetails) (domain.LastOperation, error) {
	return domain.LastOperation{}, errNotSupported("asynchronous operations")
}

func errNotSupported(what string) error {
	return apiresponses.NewFailureResponse(fmt.Errorf("%s is not supported by this broker", what), http.StatusBadRequest, "not-supported")
}
