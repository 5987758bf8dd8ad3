package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cfHomeConfig is the part of the cf CLI's config.json that Hot Topic reads
// (field names as cf v7/v8 writes them).
type cfHomeConfig struct {
	Target                string
	AccessToken           string
	RefreshToken          string
	AuthorizationEndpoint string
	UaaEndpoint           string
	UAAGrantType          string
	UAAOAuthClient        string
	UAAOAuthClientSecret  string
	SSLDisabled           bool
	OrganizationFields    struct{ GUID, Name string }
	SpaceFields           struct{ GUID, Name string }
}

// cfConfigPath is $CF_HOME/.cf/config.json, else ~/.cf/config.json, the
// same lookup the cf CLI (and go-cfclient's config.NewFromCFHome) does.
func cfConfigPath() (string, error) {
	home := os.Getenv("CF_HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("not logged in: cannot find the cf CLI config (no CF_HOME and no home directory)")
		}
		home = h
	}
	return filepath.Join(home, ".cf", "config.json"), nil
}

// openCFHome builds a target from the cf CLI's own login. It never asks for
// a password: without a usable login it says which cf command to run.
func openCFHome(ctx context.Context) (*cfTarget, error) {
	path, err := cfConfigPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("not logged in: no cf CLI login in %s; use 'cf login' first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the cf CLI config: %v", err)
	}
	var c cfHomeConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("the cf CLI config %s is not valid JSON: %v", path, err)
	}
	if c.Target == "" {
		return nil, errors.New("no API endpoint set: use 'cf api URL' and 'cf login' first")
	}
	if c.AccessToken == "" && c.RefreshToken == "" {
		return nil, errors.New("not logged in: use 'cf login' first")
	}
	if c.SpaceFields.GUID == "" {
		return nil, errors.New("no space targeted: use 'cf target -o ORG -s SPACE' first")
	}
	hc := newHTTPClient(c.SSLDisabled)
	auth := &cfHomeAuth{path: path, cfg: c, hc: hc}
	return &cfTarget{
		cc:    &ccClient{api: strings.TrimRight(c.Target, "/"), hc: hc, auth: auth},
		org:   c.OrganizationFields.Name,
		space: c.SpaceFields.Name, spaceGUID: c.SpaceFields.GUID,
		user: tokenUser(c.AccessToken),
	}, nil
}

func newHTTPClient(skipSSL bool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if skipSSL {
		tr.TLSClientConfig.InsecureSkipVerify = true // the user chose `cf api --skip-ssl-validation`
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// cfHomeAuth hands out the stored access token and refreshes it the way the
// cf CLI does: a refresh-token grant as client "cf" (basic auth), or a new
// client-credentials grant after `cf auth --client-credentials`. A refreshed
// token is written back to config.json so cf and hottopic stay in step (UAA
// may rotate refresh tokens).
type cfHomeAuth struct {
	path string
	cfg  cfHomeConfig
	hc   *http.Client
}

var errExpiredClientToken = errors.New("not logged in: the client-credentials token expired; run 'cf auth CLIENT_ID CLIENT_SECRET --client-credentials' again")

// refreshMargin: refresh a token that expires this soon, as cf does.
const refreshMargin = time.Minute

func (a *cfHomeAuth) token(ctx context.Context) (string, error) {
	if a.cfg.AccessToken != "" {
		if exp, ok := tokenExpiry(a.cfg.AccessToken); !ok || time.Until(exp) > refreshMargin {
			return a.cfg.AccessToken, nil
		}
	}
	return a.refresh(ctx)
}

func (a *cfHomeAuth) refresh(ctx context.Context) (string, error) {
	form := url.Values{}
	clientCreds := a.cfg.UAAGrantType == "client_credentials"
	if clientCreds {
		if a.cfg.UAAOAuthClientSecret == "" { // cf v8 does not keep the secret
			return "", errExpiredClientToken
		}
		form.Set("client_id", a.cfg.UAAOAuthClient)
		form.Set("client_secret", a.cfg.UAAOAuthClientSecret)
		form.Set("grant_type", "client_credentials")
	} else {
		if a.cfg.RefreshToken == "" {
			return "", errors.New("not logged in: the cf CLI token expired and there is no refresh token; use 'cf login'")
		}
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", a.cfg.RefreshToken)
	}
	base := a.cfg.AuthorizationEndpoint
	if base == "" {
		base = a.cfg.UaaEndpoint
	}
	if base == "" {
		return "", errors.New("not logged in: the cf CLI config names no UAA endpoint; use 'cf login'")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if !clientCreds {
		client := a.cfg.UAAOAuthClient
		if client == "" {
			client = "cf"
		}
		req.SetBasicAuth(client, a.cfg.UAAOAuthClientSecret)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("cannot reach UAA at %s to refresh the cf CLI token: %v", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		TokenType    string `json:"token_type"`
		Error        string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	if resp.StatusCode/100 != 2 || tok.AccessToken == "" {
		reason := tok.Error
		if reason == "" {
			reason = resp.Status
		}
		if clientCreds {
			return "", errExpiredClientToken
		}
		return "", fmt.Errorf("not logged in: the cf CLI token could not be refreshed (%s); use 'cf login'", reason)
	}
	typ := tok.TokenType
	if typ == "" {
		typ = "bearer"
	}
	a.cfg.AccessToken = strings.ToLower(typ) + " " + tok.AccessToken
	if tok.RefreshToken != "" {
		a.cfg.RefreshToken = tok.RefreshToken
	}
	if err := a.persist(); err != nil {
		return "", fmt.Errorf("saving the refreshed token to %s: %v", a.path, err)
	}
	return a.cfg.AccessToken, nil
}

// persist writes the tokens back into config.json, keeping every other field
// exactly as cf wrote it.
func (a *cfHomeAuth) persist() error {
	b, err := os.ReadFile(a.path)
	if err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for k, v := range map[string]string{"AccessToken": a.cfg.AccessToken, "RefreshToken": a.cfg.RefreshToken} {
		enc, _ := json.Marshal(v)
		raw[k] = enc
	}
	out, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(a.path), ".config-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(out, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), a.path)
}

// jwtClaims decodes a JWT's payload without checking the signature: the
// CLI only reads its own token's expiry and user name, CC does the checking.
func jwtClaims(token string) map[string]any {
	token = strings.TrimSpace(token)
	if i := strings.IndexByte(token, ' '); i >= 0 {
		token = token[i+1:]
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims map[string]any
	if json.Unmarshal(b, &claims) != nil {
		return nil
	}
	return claims
}

func tokenExpiry(token string) (time.Time, bool) {
	exp, ok := jwtClaims(token)["exp"].(float64)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(int64(exp), 0), true
}

// tokenUser is who the token belongs to, for "… as USER" lines.
func tokenUser(token string) string {
	c := jwtClaims(token)
	for _, k := range []string{"user_name", "client_id"} {
		if s, ok := c[k].(string); ok && s != "" {
			return s
		}
	}
	return ""
}
