package cfplatform

import "time"

// SetClock replaces the platform's clock (tests).
func SetClock(p *Platform, now func() time.Time) {
	p.mu.Lock()
	p.now = now
	p.mu.Unlock()
}
