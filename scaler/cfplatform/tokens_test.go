package cfplatform_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/hottopic-io/hottopic/integration/ccdouble"
	"github.com/hottopic-io/hottopic/internal/mapping"
	"github.com/hottopic-io/hottopic/scaler"
	"github.com/hottopic-io/hottopic/scaler/cfplatform"
)

func TestTokens(t *testing.T) {
	g := NewWithT(t)
	Expect := g.Expect
	ctx := context.Background()
	cc := ccdouble.New(t)
	org := cc.AddOrg("acme")
	prod, other := cc.AddSpace(org, "prod"), cc.AddSpace(org, "other")
	mapped := map[string]string{mapping.LabelMapped: "true"}
	var prodApps []string
	for _, n := range []string{"a", "b", "c"} {
		prodApps = append(prodApps, cc.AddApp(prod, n, mapped, nil))
	}
	unmapped := cc.AddApp(prod, "plain", nil, nil)
	elsewhere := cc.AddApp(other, "z", mapped, nil)
	cc.AddUser("dev", "pw", ccdouble.SpaceDeveloper(prod))
	cc.AddUser("noread", "pw", ccdouble.SpaceDeveloper(prod))
	cc.SetScopes("noread", "openid")

	tokens := cfplatform.NewTokens(cfplatform.Config{API: cc.URL()})
	cfplatform.SetTokensPaging(tokens, 2)
	now := time.Now()
	var mu sync.Mutex
	cfplatform.SetTokensClock(tokens, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	bare := func(tok string) string { return strings.TrimPrefix(tok, "bearer ") }
	checksBy := func(subject string) int {
		n := 0
		for _, c := range cc.CallsTo(http.MethodGet, "/v3/apps") {
			if c.Subject == subject {
				n++
			}
		}
		return n
	}

	dev := bare(cc.IssueToken("dev", time.Hour))
	v, err := tokens.VisibleApps(ctx, dev)
	Expect(err).NotTo(HaveOccurred())
	for _, g := range prodApps {
		Expect(v.Sees(g)).To(BeTrue(), "every page is read")
	}
	Expect(v.Sees(unmapped)).To(BeFalse(), "only mapped apps")
	Expect(v.Sees(elsewhere)).To(BeFalse(), "only the token's spaces")
	Expect(checksBy("dev")).To(Equal(2), "two pages of two")

	// Kept for 30 s: a role granted meanwhile shows after that.
	cc.Grant("dev", ccdouble.SpaceAuditor(other))
	v, err = tokens.VisibleApps(ctx, dev)
	Expect(err).NotTo(HaveOccurred())
	Expect(v.Sees(elsewhere)).To(BeFalse())
	Expect(checksBy("dev")).To(Equal(2))
	mu.Lock()
	now = now.Add(cfplatform.TokenCacheTTL)
	mu.Unlock()
	v, err = tokens.VisibleApps(ctx, dev)
	Expect(err).NotTo(HaveOccurred())
	Expect(v.Sees(elsewhere)).To(BeTrue())

	// Refusals, as CC says them.
	_, err = tokens.VisibleApps(ctx, bare(cc.IssueToken("dev", -time.Minute)))
	Expect(err).To(MatchError(scaler.ErrTokenRejected))
	_, err = tokens.VisibleApps(ctx, bare(cc.IssueToken("noread", time.Hour)))
	Expect(err).To(MatchError(scaler.ErrTokenForbidden))

	// An outage is an error of its own, and not kept: the next call asks again.
	fresh := bare(cc.IssueToken("dev", time.Hour))
	cc.SetUnavailable(true)
	_, err = tokens.VisibleApps(ctx, fresh)
	Expect(err).To(MatchError(ContainSubstring("answered 503")))
	Expect(err).NotTo(MatchError(scaler.ErrTokenRejected))
	Expect(err.Error()).NotTo(ContainSubstring(fresh))
	cc.SetUnavailable(false)
	_, err = tokens.VisibleApps(ctx, fresh)
	Expect(err).NotTo(HaveOccurred())

	// The cache is bounded, whatever number of tokens callers bring.
	for range 1100 {
		_, err := tokens.VisibleApps(ctx, bare(cc.IssueToken("dev", time.Hour)))
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(cfplatform.TokensCached(tokens)).To(BeNumerically("<=", 1024))
}
