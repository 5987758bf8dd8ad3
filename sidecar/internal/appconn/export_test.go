package appconn

import "time"

// SetPeekAfter lets tests check every reuse; it returns the undo.
func SetPeekAfter(d time.Duration) func() {
	old := peekAfter
	peekAfter = d
	return func() { peekAfter = old }
}
