package agent

import (
	"testing"
	"time"
)

// TestPacer walks Run's pacing through a storm and an idle spell: changes
// right after a step wait out minStepGap, and a tick steps only for timed
// work, a change left waiting, or idleStep.
func TestPacer(t *testing.T) {
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	var p pacer
	p.stepped(ms(0))
	for _, tc := range []struct {
		name string
		do   func() any
		want any
	}{
		{"change 30ms after a step waits", func() any { return p.change(ms(30)) }, 70 * time.Millisecond},
		{"second change in the gap waits to the same end", func() any { return p.change(ms(60)) }, 40 * time.Millisecond},
		{"tick inside the gap does not step", func() any { return p.tick(ms(90), false) }, false},
		{"tick after the gap steps for the waiting change", func() any { return p.tick(ms(150), false) }, true},
		{"step taken", func() any { p.stepped(ms(150)); return p.changed }, false},
		{"change long after the step steps at once", func() any { return p.change(ms(400)) }, time.Duration(0)},
		{"step taken again", func() any { p.stepped(ms(400)); return p.changed }, false},
		{"idle tick does not step", func() any { return p.tick(ms(600), false) }, false},
		{"tick with timed work steps", func() any { return p.tick(ms(600), true) }, true},
		{"idle tick steps after idleStep", func() any { return p.tick(ms(400).Add(idleStep), false) }, true},
	} {
		if got := tc.do(); got != tc.want {
			t.Fatalf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestStepTimed checks what makes Run tick-step: nothing after a quiet
// step, a running rotation (switch delay, grace) until its key is erased.
func TestStepTimed(t *testing.T) {
	h := newHarness(t)
	r := newRemote(t, "h2", 2, "10.42.2.0/24", t0)
	h.m.set(r.member())
	h.step()
	if h.a.timed {
		t.Fatalf("after a quiet step: timed %v, want false", h.a.timed)
	}
	h.a.Rotate()
	if !h.a.timed {
		t.Fatalf("after a rotation: timed %v, want true (switch delay and grace run)", h.a.timed)
	}
	h.clock.add(grace + time.Second)
	h.step()
	if h.a.timed {
		t.Fatalf("after the grace period: timed %v, want false", h.a.timed)
	}
}
