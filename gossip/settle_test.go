package gossip

import (
	"testing"
	"time"
)

// TestSettleDue walks the settle push/pulls through a join, a time alone
// and a second join: one push/pull 3 s and one 15 s after each join, only
// those earlier than memberlist's own push/pull interval.
func TestSettleDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var s settleState
	for _, tc := range []struct {
		name  string
		now   time.Time
		alone bool
		want  bool
	}{
		{"alone at start", at(0), true, false},
		{"joined", at(1), false, false},
		{"before the first", at(3.9), false, false},
		{"first due", at(4), false, true},
		{"not twice", at(4.2), false, false},
		{"second due", at(16), false, true},
		{"nothing more", at(60), false, false},
		{"alone again", at(61), true, false},
		{"joined again", at(62), false, false},
		{"first after the rejoin", at(65), false, true},
	} {
		if got := s.due(tc.now, tc.alone, 30*time.Second); got != tc.want {
			t.Fatalf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	// FastTiming's 2 s push/pull needs none of them.
	var f settleState
	for sec := range 30 {
		if f.due(at(float64(sec)), false, 2*time.Second) {
			t.Fatalf("push/pull every 2 s: settle due at %d s, want never", sec)
		}
	}
}
