package cli

// Where the operations commands do their work: JetStream directly (the
// `hottopic dev` runtime's NATS, or a NATS given on Cloud Foundry), or, on
// Cloud Foundry with a known scaler, the scaler's API with the user's cf
// token (docs/design.md, "The scaler's API"), which needs no NATS
// credentials. Both run internal/ops, so they say the same.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hottopic-io/hottopic/internal/ops"
	"github.com/hottopic-io/hottopic/internal/provision"
	"github.com/hottopic-io/hottopic/scaler"
)

// opsBackend does the operations on one app's events (guid, named name).
type opsBackend interface {
	// list reads the app's dead letters (all the backend holds: guid ""),
	// newest first.
	list(ctx context.Context, guid, t string) ([]ops.Letter, error)
	get(ctx context.Context, guid, name string, id uint64) (ops.Letter, error)
	// redrive selects (ops.SelectRedrive) and sends, telling announce how
	// many it selected as soon as it knows (over NATS before it waits for
	// the app, through the scaler once it answered).
	redrive(ctx context.Context, guid, name, t string, ids []uint64, limit int, wait time.Duration, announce func(n int)) (ops.Outcome, error)
	replay(ctx context.Context, guid, name, t string, since, until time.Time) (ops.Replayed, error)
	purge(ctx context.Context, guid, t string, letters []ops.Letter) (int, error)
	close()
}

// natsOps works on JetStream directly.
type natsOps struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	streams provision.StreamOptions
}

func (n *natsOps) close() { n.nc.Close() }

func (n *natsOps) list(ctx context.Context, guid, t string) ([]ops.Letter, error) {
	return ops.List(ctx, n.js, ops.Filter{App: guid, Topic: t})
}

func (n *natsOps) get(ctx context.Context, guid, name string, id uint64) (ops.Letter, error) {
	return ops.GetOf(ctx, n.js, guid, name, id)
}

func (n *natsOps) redrive(ctx context.Context, guid, name, t string, ids []uint64, limit int, wait time.Duration, announce func(int)) (ops.Outcome, error) {
	m, letters, err := ops.SelectRedrive(ctx, n.js, guid, name, t, ids, limit)
	if err != nil {
		return ops.Outcome{}, err
	}
	if announce(len(letters)); len(letters) == 0 {
		return ops.Outcome{}, nil
	}
	return ops.Redrive(ctx, n.js, m, letters, n.streams, wait)
}

func (n *natsOps) replay(ctx context.Context, guid, name, t string, since, until time.Time) (ops.Replayed, error) {
	return ops.ReplayTo(ctx, n.js, guid, name, t, since, until, n.streams)
}

func (n *natsOps) purge(ctx context.Context, _, _ string, letters []ops.Letter) (int, error) {
	return ops.Purge(ctx, n.js, letters)
}

// apiOps works through the scaler's API with the cf token.
type apiOps struct {
	base  string
	auth  authenticator
	hc    *http.Client
	apps  []string // the GUIDs of the space's mapped apps, for a list of all
	write string   // what a write does, for "not authorized to …"
}

// apiTimeout bounds one API call; a redrive also waits for the app.
const apiTimeout = time.Minute

// apiError is the scaler's refusal; it says which ops error it is.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func (e *apiError) Is(target error) bool {
	return e.status == http.StatusConflict && target == ops.ErrNotMapped ||
		e.status == http.StatusNotFound && target == ops.ErrNoLetter
}

func (a *apiOps) close() {}

func (a *apiOps) appPath(guid, rest string) string {
	return a.base + "/v1/apps/" + url.PathEscape(guid) + rest
}

// call sends one request (body as JSON unless nil) and decodes a 2xx answer
// into out; a refusal becomes an *apiError with the scaler's one line.
func (a *apiOps) call(ctx context.Context, method, u string, body, out any, timeout time.Duration) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := scalerDo(ctx, a.hc, method, u, b, a.auth)
	if err != nil {
		return fmt.Errorf("scaler at %s unreachable: %v", redactedURL(a.base), err)
	}
	defer drain(resp)
	if resp.StatusCode/100 != 2 {
		reason := strings.TrimPrefix(scalerReason(resp), ": ")
		if reason == "" {
			reason = "the scaler answered " + resp.Status
		}
		if resp.StatusCode == http.StatusForbidden && a.write != "" {
			reason = fmt.Sprintf("not authorized to %s: %s (you need the Space Developer role in this space)", a.write, reason)
		}
		return &apiError{status: resp.StatusCode, msg: reason}
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("scaler at %s: unreadable answer to %s %s: %v", redactedURL(a.base), method, redactURL(u), err)
	}
	return nil
}

func (a *apiOps) list(ctx context.Context, guid, t string) ([]ops.Letter, error) {
	q := ""
	if t != "" {
		q = "?" + url.Values{"topic": {t}}.Encode()
	}
	if guid != "" {
		var res struct {
			DeadLetters []ops.Letter `json:"dead_letters"`
		}
		err := a.call(ctx, http.MethodGet, a.appPath(guid, "/dead-letters"+q), nil, &res, apiTimeout)
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusNotFound {
			// The user sees the app in the space (resolved with the same
			// token), so it is not mapped or bound to no bus: as over NATS,
			// it shows no dead letters.
			return []ops.Letter{}, nil
		}
		return res.DeadLetters, err
	}
	// Every mapped app of the space, merged newest first.
	all := []ops.Letter{}
	for _, g := range a.apps {
		ls, err := a.list(ctx, g, t)
		if err != nil {
			return nil, err
		}
		all = append(all, ls...)
	}
	slices.SortStableFunc(all, func(x, y ops.Letter) int {
		if c := y.Time.Compare(x.Time); c != 0 {
			return c
		}
		return cmp.Compare(y.ID, x.ID)
	})
	return all, nil
}

func (a *apiOps) get(ctx context.Context, guid, _ string, id uint64) (ops.Letter, error) {
	var l scaler.Letter
	if err := a.call(ctx, http.MethodGet, a.appPath(guid, "/dead-letters/"+strconv.FormatUint(id, 10)), nil, &l, apiTimeout); err != nil {
		return ops.Letter{}, err
	}
	l.Letter.Data = l.Data
	return l.Letter, nil
}

func (a *apiOps) redrive(ctx context.Context, guid, _, t string, ids []uint64, limit int, wait time.Duration, announce func(int)) (ops.Outcome, error) {
	var res scaler.RedriveResult
	req := scaler.RedriveRequest{Topic: t, IDs: ids, Limit: limit, Wait: wait.String()}
	if err := a.call(ctx, http.MethodPost, a.appPath(guid, "/redrive"), req, &res, apiTimeout+wait); err != nil {
		return res.Outcome, err
	}
	announce(res.Selected)
	return res.Outcome, nil
}

func (a *apiOps) replay(ctx context.Context, guid, _, t string, since, until time.Time) (ops.Replayed, error) {
	var res ops.Replayed
	err := a.call(ctx, http.MethodPost, a.appPath(guid, "/replay"), scaler.ReplayRequest{Topic: t, Since: since, Until: until}, &res, apiTimeout)
	return res, err
}

// purge deletes exactly the letters the user was asked about.
func (a *apiOps) purge(ctx context.Context, guid, t string, letters []ops.Letter) (int, error) {
	req := scaler.PurgeRequest{Topic: t}
	for _, l := range letters {
		req.IDs = append(req.IDs, l.ID)
	}
	var res scaler.PurgeResult
	err := a.call(ctx, http.MethodDelete, a.appPath(guid, "/dead-letters"), req, &res, apiTimeout)
	return res.Deleted, err
}

// scalerDo sends one request to the scaler's API with the cf token (none
// when auth is nil); after a 401 it refreshes the token once and asks again.
func scalerDo(ctx context.Context, hc *http.Client, method, u string, body []byte, auth authenticator) (*http.Response, error) {
	send := func(tok string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if tok != "" {
			req.Header.Set("Authorization", tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, unwrapURLError(err)
		}
		return resp, nil
	}
	if auth == nil {
		return send("")
	}
	tok, err := auth.token(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := send(tok)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	fresh, err := auth.refresh(ctx)
	if err != nil || fresh == tok {
		return resp, nil // the scaler's own answer says why
	}
	drain(resp)
	return send(fresh)
}
