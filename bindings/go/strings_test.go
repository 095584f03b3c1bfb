package tidemark

import (
	"fmt"
	"testing"
)

// Every exported enum prints its name, and an undefined value prints its type and number
// (so a log line never says just "unknown").
func TestEnumStrings(t *testing.T) {
	for _, c := range []struct {
		v    fmt.Stringer
		want string
	}{
		{WriterIdle, "idle"},
		{WriterPending, "pending"},
		{WriterEvicted, "evicted"},
		{WriterState(9), "WriterState(9)"},
		{EvictNone, "none"},
		{EvictCrashed, "crashed"},
		{EvictOrphaned, "orphaned"},
		{EvictStalled, "stalled"},
		{EvictReason(9), "EvictReason(9)"},
		{EventChallenged, "challenged"},
		{EventEvicted, "evicted"},
		{EventRemoved, "removed"},
		{EventKind(9), "EventKind(9)"},
		{DownCrash, "crash"},
		{DownCleanup, "cleanup"},
		{DownTeardown, "teardown"},
		{DownClass(9), "DownClass(9)"},
		{TriggerCount, "count"},
		{TriggerBytes, "bytes"},
		{TriggerLinger, "linger"},
		{TriggerFlush, "flush"},
		{TriggerStop, "stop"},
		{Trigger(9), "Trigger(9)"},
		{StatusOK, "ok"},
		{StatusFull, "batch buffer is full"},
		{StatusEvictedWriter, "writer was evicted"},
		{Status(99), "unknown status 99"},
	} {
		if got := c.v.String(); got != c.want {
			t.Errorf("%T(%d).String() = %q, want %q", c.v, c.v, got, c.want)
		}
	}
	// %v uses them: an event reads as words.
	e := Event{Kind: EventEvicted, Reason: EvictStalled, Writer: 7}
	if got := fmt.Sprintf("%v", e); got != "{evicted stalled 7}" {
		t.Errorf("event prints as %q", got)
	}
	// Every status the library defines has its own description.
	seen := map[string]Status{}
	for s := StatusOK; s <= StatusOutOfMemory; s++ {
		d := s.String()
		if d == "" || d == "unknown status" {
			t.Errorf("status %d has no description", uint32(s))
		}
		if prev, dup := seen[d]; dup {
			t.Errorf("statuses %d and %d share the description %q", uint32(prev), uint32(s), d)
		}
		seen[d] = s
	}
}
