package buses

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Snapshot is the whole state at one moment. Its maps are the caller's.
type Snapshot struct {
	Buses    map[string]*Bus     // by instance ID
	Bindings map[string]*Binding // by BindingKey
	// Unreadable records, one line each (a record the broker of another
	// version wrote, or a damaged one): skipped, not fatal.
	Errors []string
}

// Follow watches both buckets and calls f with the whole state: once when
// their current values are read, then after every change (changes that
// arrive together in one call). It returns when ctx ends (nil) or a watch
// fails.
func (st *State) Follow(ctx context.Context, f func(Snapshot)) error {
	bw, err := st.buses.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch KV bucket %s: %w", BusesBucket, err)
	}
	defer func() { _ = bw.Stop() }()
	nw, err := st.bindings.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch KV bucket %s: %w", BindingsBucket, err)
	}
	defer func() { _ = nw.Stop() }()

	buses, bindings := map[string]*Bus{}, map[string]*Binding{}
	bad := map[string]string{}
	busesRead, bindingsRead := false, false
	apply := func(e jetstream.KeyValueEntry, isBus bool) {
		k := e.Key()
		delete(bad, e.Bucket()+"/"+k)
		gone := e.Operation() != jetstream.KeyValuePut
		switch {
		case isBus && gone:
			delete(buses, k)
		case isBus:
			b, err := DecodeBus(k, e.Value())
			if err != nil {
				delete(buses, k)
				bad[e.Bucket()+"/"+k] = err.Error()
				return
			}
			buses[k] = b
		case gone:
			delete(bindings, k)
		default:
			_, id, _ := strings.Cut(k, ".")
			b, err := DecodeBinding(id, e.Value())
			if err != nil {
				delete(bindings, k)
				bad[e.Bucket()+"/"+k] = err.Error()
				return
			}
			bindings[k] = b
		}
	}
	// next takes one update; false when the watch ended.
	next := func(block bool) (changed bool, err error) {
		var e jetstream.KeyValueEntry
		var ok, isBus bool
		if block {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case e, ok = <-bw.Updates():
				isBus = true
			case e, ok = <-nw.Updates():
			}
		} else {
			select {
			case e, ok = <-bw.Updates():
				isBus = true
			case e, ok = <-nw.Updates():
			default:
				return false, nil
			}
		}
		if !ok {
			return false, errors.New("watch of the broker's state ended")
		}
		if e == nil { // this bucket's current values are all read
			if isBus {
				busesRead = true
			} else {
				bindingsRead = true
			}
			return true, nil
		}
		apply(e, isBus)
		return true, nil
	}
	for {
		if _, err := next(true); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for { // take what else is there before calling f once
			more, err := next(false)
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
		if busesRead && bindingsRead {
			s := Snapshot{Buses: maps.Clone(buses), Bindings: maps.Clone(bindings)}
			for k, e := range bad {
				s.Errors = append(s.Errors, k+": "+e)
			}
			f(s)
		}
	}
}
