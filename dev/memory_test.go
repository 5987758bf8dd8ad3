package dev

import (
	"runtime/debug"
	"testing"
)

// The dev process bounds its heap unless GOMEMLIMIT says otherwise.
func TestBoundMemory(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(1 << 40)
	boundMemory()
	if got := debug.SetMemoryLimit(-1); got != MemoryLimit {
		t.Fatalf("memory limit %d, want %d", got, MemoryLimit)
	}

	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetMemoryLimit(1 << 30)
	boundMemory()
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Fatalf("GOMEMLIMIT=1GiB: memory limit %d, want it kept", got)
	}
}
