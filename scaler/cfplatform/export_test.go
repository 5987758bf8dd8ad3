package cfplatform

import "time"

// SetClock replaces the platform's clock (tests).
func SetClock(p *Platform, now func() time.Time) {
	p.mu.Lock()
	p.now = now
	p.mu.Unlock()
}

// SetTokensPaging makes Tokens list this many apps per page (tests).
func SetTokensPaging(t *Tokens, perPage int) { t.pageSize = perPage }

// SetTokensClock replaces the token cache's clock (tests).
func SetTokensClock(t *Tokens, now func() time.Time) {
	t.mu.Lock()
	t.now = now
	t.mu.Unlock()
}

// TokensCached counts the answers the token cache holds (tests).
func TokensCached(t *Tokens) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.cache)
}
