package ccdouble

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Role is a CC role of a UAA client or user.
type Role struct {
	Type string // admin, admin_read_only, global_auditor, organization_manager, space_developer, ...
	GUID string // the org or space of org and space roles
}

// Admin is the cloud_controller.admin scope: everything, everywhere.
func Admin() Role { return Role{Type: "admin"} }

// AdminReadOnly is cloud_controller.admin_read_only: reads everything.
func AdminReadOnly() Role { return Role{Type: "admin_read_only"} }

// GlobalAuditor is cloud_controller.global_auditor: reads everything, writes nothing.
func GlobalAuditor() Role { return Role{Type: "global_auditor"} }

// OrgManager sees every space of the org but cannot change apps.
func OrgManager(orgGUID string) Role { return Role{Type: "organization_manager", GUID: orgGUID} }

// SpaceDeveloper may read, scale and relabel apps of the space.
func SpaceDeveloper(spaceGUID string) Role { return Role{Type: "space_developer", GUID: spaceGUID} }

// SpaceSupporter may read and scale apps of the space, not relabel them.
func SpaceSupporter(spaceGUID string) Role { return Role{Type: "space_supporter", GUID: spaceGUID} }

// SpaceManager may read apps of the space.
func SpaceManager(spaceGUID string) Role { return Role{Type: "space_manager", GUID: spaceGUID} }

// SpaceAuditor may read apps of the space.
func SpaceAuditor(spaceGUID string) Role { return Role{Type: "space_auditor", GUID: spaceGUID} }

type uaaClient struct {
	id, secret string
	public     bool // no secret (the cf CLI's client)
	grants     []string
}

type uaaUser struct {
	id, name, password string
}

type issuedToken struct {
	subject string
	revoked bool
}

type refreshGrant struct {
	clientID, subject string
	user              bool
	exp               time.Time
	revoked           bool
}

type claims struct {
	JTI       string   `json:"jti"`
	Sub       string   `json:"sub"`
	Scope     []string `json:"scope"`
	ClientID  string   `json:"client_id"`
	CID       string   `json:"cid"`
	AZP       string   `json:"azp"`
	GrantType string   `json:"grant_type"`
	UserID    string   `json:"user_id,omitempty"`
	UserName  string   `json:"user_name,omitempty"`
	Email     string   `json:"email,omitempty"`
	Origin    string   `json:"origin,omitempty"`
	IAT       int64    `json:"iat"`
	EXP       int64    `json:"exp"`
	ISS       string   `json:"iss"`
	ZID       string   `json:"zid"`
	AUD       []string `json:"aud"`
}

func (cl *claims) subject() string {
	if cl.UserName != "" {
		return cl.UserName
	}
	return cl.ClientID
}

// AddClient registers a UAA client that may use the client_credentials and
// refresh_token grants, and gives it CC roles.
func (c *CC) AddClient(id, secret string, roles ...Role) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addClientLocked(id, secret, roles)
}

func (c *CC) addClientLocked(id, secret string, roles []Role) {
	c.clients[id] = &uaaClient{id: id, secret: secret, grants: []string{"client_credentials", "refresh_token", "password"}}
	c.roles[id] = append(c.roles[id], roles...)
}

// AddUser registers a UAA user (password grant, e.g. cf auth USER PASS) with
// CC roles.
func (c *CC) AddUser(name, password string, roles ...Role) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users[name] = &uaaUser{id: newGUID(), name: name, password: password}
	c.roles[name] = append(c.roles[name], roles...)
}

// Grant gives a client or user more roles; they apply to tokens already issued.
func (c *CC) Grant(subject string, roles ...Role) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roles[subject] = append(c.roles[subject], roles...)
}

// Revoke removes every role of a client or user.
func (c *CC) Revoke(subject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.roles, subject)
}

// SetScopes overrides the scopes put in tokens issued from now on to a client
// or user (normally derived from its roles), e.g. to test CF-InsufficientScope.
func (c *CC) SetScopes(subject string, scopes ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes[subject] = scopes
}

// SetTokenLifetime changes the lifetime of access tokens issued from now on.
func (c *CC) SetTokenLifetime(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokenLifetime = d
}

// ExpireTokens invalidates every access token issued so far: CC answers
// 401 CF-InvalidAuthToken to them. Refresh tokens stay valid.
func (c *CC) ExpireTokens() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.tokens {
		t.revoked = true
	}
}

// ExpireRefreshTokens invalidates every refresh token issued so far: UAA
// answers 401 invalid_token to refresh requests with them.
func (c *CC) ExpireRefreshTokens() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.refreshTokens {
		t.revoked = true
	}
}

// IssueToken mints an access token for a registered client or user, as UAA
// issues one (scopes from the roles, or SetScopes), valid for lifetime
// (<= 0: already expired). It returns "bearer JWT", what cf oauth-token
// prints.
func (c *CC) IssueToken(subject string, lifetime time.Duration) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	user, grant := c.users[subject], "password"
	clientID := "cf"
	if user == nil {
		if c.clients[subject] == nil {
			panic("ccdouble: IssueToken: unknown client or user " + subject)
		}
		grant, clientID = "client_credentials", subject
	}
	scopes := c.scopes[subject]
	if scopes == nil {
		scopes = scopesFor(c.roles[subject], user != nil)
	}
	access := c.claimsLocked(clientID, grant, user, scopes, lifetime)
	c.tokens[access.JTI] = &issuedToken{subject: subject}
	return "bearer " + c.signLocked(access)
}

// TokensIssued counts the access tokens UAA has issued.
func (c *CC) TokensIssued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tokens)
}

func scopesFor(roles []Role, user bool) []string {
	scopes := []string{"cloud_controller.read", "cloud_controller.write"}
	if user {
		scopes = append(scopes, "openid", "uaa.user", "password.write", "scim.read")
	}
	for _, r := range roles {
		switch r.Type {
		case "admin":
			scopes = append(scopes, "cloud_controller.admin")
		case "admin_read_only":
			scopes = []string{"cloud_controller.admin_read_only"}
		case "global_auditor":
			scopes = []string{"cloud_controller.global_auditor"}
		}
	}
	slices.Sort(scopes)
	return slices.Compact(scopes)
}

func (c *CC) serveUAA(w http.ResponseWriter, r *http.Request, p string) {
	switch {
	case p == "/oauth/token" && r.Method == http.MethodPost:
		c.serveToken(w, r)
	case (p == "/login" || p == "/info") && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{
			"app":       map[string]string{"version": "78.0.0"},
			"links":     map[string]string{"uaa": c.UAAURL(), "login": c.UAAURL(), "passwd": "/forgot_password", "register": "/create_account"},
			"zone_name": "uaa",
			"entityID":  "ccdouble",
			"prompts": map[string][]string{
				"username": {"text", "Email"},
				"password": {"password", "Password"},
			},
		})
	default:
		writeUAAError(w, http.StatusNotFound, "not_found", "no such UAA endpoint in the double")
	}
}

// clientCredentials takes the client from Basic auth (values are
// form-encoded, RFC 6749 2.3.1) or the client_id/client_secret form fields.
func clientCredentials(r *http.Request) (id, secret string, ok bool) {
	if u, p, basic := r.BasicAuth(); basic {
		id, err1 := url.QueryUnescape(u)
		secret, err2 := url.QueryUnescape(p)
		if err1 != nil || err2 != nil {
			return u, p, true
		}
		return id, secret, true
	}
	if r.PostForm.Has("client_id") {
		return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), true
	}
	return "", "", false
}

func (c *CC) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeUAAError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return
	}
	id, secret, ok := clientCredentials(r)
	if !ok {
		writeUAAError(w, http.StatusUnauthorized, "unauthorized", "Full authentication is required to access this resource")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	client := c.clients[id]
	if client == nil || (!client.public && client.secret != secret) || (client.public && secret != "") {
		writeUAAError(w, http.StatusUnauthorized, "unauthorized", "Bad credentials")
		return
	}
	grant := r.PostForm.Get("grant_type")
	if !slices.Contains(client.grants, grant) {
		if grant == "" || !slices.Contains([]string{"client_credentials", "password", "refresh_token", "authorization_code", "implicit"}, grant) {
			writeUAAError(w, http.StatusBadRequest, "unsupported_grant_type", "Unsupported grant type: "+grant)
			return
		}
		writeUAAError(w, http.StatusUnauthorized, "invalid_client", "Unauthorized grant type: "+grant)
		return
	}
	var subject string
	var user *uaaUser
	switch grant {
	case "client_credentials":
		subject = id
	case "password":
		user = c.users[r.PostForm.Get("username")]
		if user == nil || user.password != r.PostForm.Get("password") {
			writeUAAError(w, http.StatusUnauthorized, "unauthorized", "Bad credentials")
			return
		}
		subject = user.name
	case "refresh_token":
		rg, err := c.parseRefreshLocked(r.PostForm.Get("refresh_token"))
		if err != nil || rg.clientID != id {
			writeUAAError(w, http.StatusUnauthorized, "invalid_token", "Invalid refresh token")
			return
		}
		subject = rg.subject
		if rg.user {
			user = c.users[subject]
			if user == nil {
				writeUAAError(w, http.StatusUnauthorized, "invalid_token", "Invalid refresh token (user gone)")
				return
			}
		}
	}
	scopes := c.scopes[subject]
	if scopes == nil {
		scopes = scopesFor(c.roles[subject], user != nil)
	}
	if want := strings.Fields(r.PostForm.Get("scope")); len(want) > 0 {
		for _, s := range want {
			if !slices.Contains(scopes, s) {
				writeUAAError(w, http.StatusBadRequest, "invalid_scope", "Invalid scope: "+s)
				return
			}
		}
		scopes = want
	}
	access := c.claimsLocked(id, grant, user, scopes, c.tokenLifetime)
	c.tokens[access.JTI] = &issuedToken{subject: subject}
	resp := map[string]any{
		"access_token": c.signLocked(access),
		"token_type":   "bearer",
		"expires_in":   int(c.tokenLifetime / time.Second),
		"scope":        strings.Join(scopes, " "),
		"jti":          access.JTI,
	}
	if grant != "client_credentials" {
		refresh := c.claimsLocked(id, grant, user, scopes, c.refreshLifetime)
		refresh.JTI += "-r"
		c.refreshTokens[refresh.JTI] = &refreshGrant{clientID: id, subject: subject, user: user != nil, exp: time.Unix(refresh.EXP, 0)}
		resp["refresh_token"] = c.signLocked(refresh)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

func (c *CC) claimsLocked(clientID, grant string, user *uaaUser, scopes []string, life time.Duration) *claims {
	now := time.Now()
	cl := &claims{
		JTI: strings.ReplaceAll(newGUID(), "-", ""), Sub: clientID, Scope: scopes,
		ClientID: clientID, CID: clientID, AZP: clientID, GrantType: grant,
		IAT: now.Unix(), EXP: now.Add(life).Unix(), ISS: c.TokenURL(), ZID: "uaa",
		AUD: []string{"cloud_controller", clientID},
	}
	if user != nil {
		cl.Sub, cl.UserID, cl.UserName, cl.Email, cl.Origin = user.id, user.id, user.name, user.name, "uaa"
	}
	return cl
}

func (c *CC) signLocked(cl *claims) string {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"ccdouble","typ":"JWT"}`))
	payload, _ := json.Marshal(cl)
	signing := header + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, c.signingKey)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// decode checks the signature and returns the claims; expiry is the
// caller's business.
func (c *CC) decode(token string) (*claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	mac := hmac.New(sha256.New, c.signingKey)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, errors.New("bad signature")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var cl claims
	if err := json.Unmarshal(b, &cl); err != nil {
		return nil, err
	}
	return &cl, nil
}

func (c *CC) parseRefreshLocked(token string) (*refreshGrant, error) {
	cl, err := c.decode(token)
	if err != nil {
		return nil, err
	}
	rg := c.refreshTokens[cl.JTI]
	if rg == nil || rg.revoked || time.Now().After(rg.exp) {
		return nil, errors.New("refresh token expired or unknown")
	}
	return rg, nil
}

// bearer returns the token of an Authorization header, "" when none.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// authenticate returns the valid access token's claims or the CC error.
func (c *CC) authenticate(r *http.Request) (*claims, *ccError) {
	tok, present := bearer(r)
	if !present {
		return nil, errNotAuthenticated()
	}
	cl, err := c.decode(tok)
	if err != nil {
		return nil, errInvalidAuthToken()
	}
	c.mu.Lock()
	issued := c.tokens[cl.JTI]
	c.mu.Unlock()
	if issued == nil || issued.revoked || time.Now().Unix() >= cl.EXP {
		return nil, errInvalidAuthToken()
	}
	return cl, nil
}

// subjectOf names who makes a request, for the call record.
func (c *CC) subjectOf(r *http.Request, body []byte) string {
	if strings.HasPrefix(r.URL.Path, "/uaa/") {
		if u, _, ok := r.BasicAuth(); ok {
			if id, err := url.QueryUnescape(u); err == nil {
				return id
			}
			return u
		}
		if form, err := url.ParseQuery(string(body)); err == nil {
			return form.Get("client_id")
		}
	}
	if tok, ok := bearer(r); ok {
		if cl, err := c.decode(tok); err == nil {
			return cl.subject()
		}
	}
	return ""
}
