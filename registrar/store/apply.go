package store

import (
	"cmp"
	"slices"
)

// Apply computes the result of u on the live bindings of an AOR, following
// RFC 3261 §10.3 steps 7-8. It does not modify live. Stores that can run Go
// under their own lock use it directly; the Redis store runs the same rules
// in a Lua script and shares the contract tests.
func Apply(live []Binding, u Update) ([]Binding, error) {
	byID := make(map[string]int, len(live))
	for i, b := range live {
		byID[b.ID] = i
	}
	// A lower CSeq on the same Call-ID is a delayed, older request. An equal
	// one is a retransmission that outlived its transaction: applying it again
	// gives the same result.
	outOfOrder := func(b Binding) bool { return b.CallID == u.CallID && b.CSeq > u.CSeq }

	if u.RemoveAll {
		for _, b := range live {
			if outOfOrder(b) {
				return nil, ErrOutOfOrder
			}
		}
		return nil, nil
	}
	next := slices.Clone(live)
	removed := map[string]bool{}
	for _, c := range u.Contacts {
		c.CallID, c.CSeq = u.CallID, u.CSeq // the rule above compares against these next time
		// A REGISTER may name one contact twice: then the last one counts,
		// as each is applied in order (and in update.lua). The second
		// finds the first in next, past live's end: only a binding that
		// was live can be out of order (indexing live by it panicked,
		// a REGISTER ending the process; FuzzRegister).
		i, exists := byID[c.ID]
		if exists && i < len(live) && outOfOrder(live[i]) {
			return nil, ErrOutOfOrder
		}
		switch {
		case !c.Expires.After(u.Now):
			if exists {
				removed[c.ID] = true
			}
		case exists:
			next[i] = c
			delete(removed, c.ID) // removed, then named again
		default:
			byID[c.ID] = len(next)
			next = append(next, c)
		}
	}
	if len(removed) > 0 {
		next = slices.DeleteFunc(next, func(b Binding) bool { return removed[b.ID] })
	}
	if u.MaxContacts > 0 && len(next) > u.MaxContacts && len(next) > len(live) {
		return nil, ErrTooManyContacts
	}
	Sort(next)
	return next, nil
}

// Sort orders bindings as forking tries them: highest q first (no q counts as
// 1.0, RFC 3261 §16.6), then the most recently refreshed.
func Sort(bs []Binding) {
	slices.SortStableFunc(bs, func(a, b Binding) int {
		if c := cmp.Compare(effectiveQ(b.Q), effectiveQ(a.Q)); c != 0 {
			return c
		}
		if c := b.Updated.Compare(a.Updated); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

func effectiveQ(q int) int {
	if q < 0 {
		return 1000
	}
	return q
}
