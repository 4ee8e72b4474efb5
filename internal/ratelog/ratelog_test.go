package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func lines(b *bytes.Buffer) []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestFloodIsBounded(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(1000, 0)}
	log, _ := NewWithClock(slog.New(slog.NewTextHandler(&buf, nil)), time.Second, 3, clk.now)
	for range 10000 {
		log.Error("peer keys", "peer", "h2", "err", "boom")
	}
	if got := len(lines(&buf)); got != 3 {
		t.Fatalf("10000 identical lines in one window: got %d written, want 3", got)
	}
	// Another peer is another kind.
	log.Error("peer keys", "peer", "h3", "err", "boom")
	if got := len(lines(&buf)); got != 4 {
		t.Fatalf("a line about another peer: got %d lines, want 4", got)
	}
	// After the window the next line says how many were suppressed.
	clk.t = clk.t.Add(time.Second)
	log.Error("peer keys", "peer", "h2", "err", "boom")
	l := lines(&buf)
	if last := l[len(l)-1]; !strings.Contains(last, "suppressed=9997") {
		t.Fatalf("first line after the window: got %q, want suppressed=9997", last)
	}
}

func TestWithAttrsIdentity(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(1000, 0)}
	log, _ := NewWithClock(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute, 1, clk.now)
	a := log.With("peer", "a")
	b := log.With("peer", "b")
	for range 100 {
		a.Warn("sequence renewal failed")
		b.Warn("sequence renewal failed")
	}
	if got := len(lines(&buf)); got != 2 {
		t.Fatalf("two peers' loggers, 100 lines each, burst 1: got %d lines, want 2", got)
	}
}

func TestKindsBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	log, lim := NewWithClock(slog.New(slog.DiscardHandler), time.Minute, 1, clk.now)
	for i := range 3 * maxKinds {
		log.Info("x", "peer", i)
	}
	lim.mu.Lock()
	n := len(lim.kinds)
	lim.mu.Unlock()
	if n > maxKinds {
		t.Fatalf("kinds after %d distinct peers: got %d, want <= %d", 3*maxKinds, n, maxKinds)
	}
}

func TestEnabledFollowsNext(t *testing.T) {
	log := New(slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn})), 0, 0)
	if log.Enabled(t.Context(), slog.LevelInfo) {
		t.Fatal("Enabled(info) under a warn handler: got true, want false")
	}
}
