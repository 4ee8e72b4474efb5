// Package ratelog limits how often one kind of log line is written. A
// control loop that ticks every 200 ms, or a path that runs once per member
// or per packet, must not turn one lasting fault (a member with bad keys, a
// failing disk, a bridge that is gone) into a line every tick: the first
// lines of a kind go through, the rest are counted, and the next line of that
// kind after a quiet window says how many were suppressed.
//
// A kind is the record's level and message plus the values of the identity
// keys (peer, prefix, spi, node) among its attributes, so one member's fault
// does not hide another's. The package owns no output: it wraps a
// slog.Handler.
package ratelog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Defaults: at most Burst lines of a kind per Window.
const (
	Window = 10 * time.Second
	Burst  = 3
	// maxKinds bounds the memory a flood of distinct kinds (many peers)
	// can take: past it the table is forgotten and starts again.
	maxKinds = 4096
)

// identityKeys are the attributes that make two lines different kinds.
var identityKeys = map[string]bool{"peer": true, "prefix": true, "spi": true, "node": true, "member": true}

// Limiter is the shared state of every logger derived from one New.
type Limiter struct {
	window time.Duration
	burst  int
	now    func() time.Time

	mu    sync.Mutex // guards kinds
	kinds map[string]*kind
}

type kind struct {
	start      time.Time // of the current window
	n          int       // lines let through in the window
	suppressed int       // lines dropped since the last one let through
}

// NewLimiter returns a limiter that lets burst lines of one kind through
// per window, by the clock now; for log sources that are not slog records
// (memberlist's log lines), which name their kinds themselves.
func NewLimiter(window time.Duration, burst int, now func() time.Time) *Limiter {
	if window <= 0 {
		window = Window
	}
	if burst <= 0 {
		burst = Burst
	}
	return &Limiter{window: window, burst: burst, now: now, kinds: map[string]*kind{}}
}

// Allow reports whether a line of kind k goes through, and how many of its
// kind were suppressed before it.
func (l *Limiter) Allow(k string) (bool, int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.kinds[k]
	if st == nil {
		if len(l.kinds) >= maxKinds {
			clear(l.kinds)
		}
		st = &kind{start: now}
		l.kinds[k] = st
	}
	if now.Sub(st.start) >= l.window {
		st.start, st.n = now, 0
	}
	if st.n >= l.burst {
		st.suppressed++
		return false, 0
	}
	st.n++
	s := st.suppressed
	st.suppressed = 0
	return true, s
}

// New returns a logger that writes through log's handler at most burst
// lines of one kind per window. window <= 0 and burst <= 0 take the
// package defaults.
func New(log *slog.Logger, window time.Duration, burst int) *slog.Logger {
	l, _ := NewWithClock(log, window, burst, time.Now)
	return l
}

// NewWithClock is New with a clock, for tests; it also returns the limiter.
func NewWithClock(log *slog.Logger, window time.Duration, burst int, now func() time.Time) (*slog.Logger, *Limiter) {
	lim := NewLimiter(window, burst, now)
	return slog.New(&handler{next: log.Handler(), lim: lim}), lim
}

// handler is the slog.Handler that consults the limiter.
type handler struct {
	next slog.Handler
	lim  *Limiter
	// ident holds identity attributes added with WithAttrs, already
	// rendered, so they count in the kind.
	ident string
}

func (h *handler) Enabled(ctx context.Context, lvl slog.Level) bool {
	return h.next.Enabled(ctx, lvl)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	b.WriteString(h.ident)
	r.Attrs(func(a slog.Attr) bool {
		if identityKeys[a.Key] {
			b.WriteByte(0)
			b.WriteString(a.Key)
			b.WriteByte('=')
			b.WriteString(a.Value.String())
		}
		return true
	})
	ok, suppressed := h.lim.Allow(b.String())
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	ident := h.ident
	for _, a := range attrs {
		if identityKeys[a.Key] {
			ident += "\x00" + a.Key + "=" + a.Value.String()
		}
	}
	return &handler{next: h.next.WithAttrs(attrs), lim: h.lim, ident: ident}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), lim: h.lim, ident: h.ident + "\x00group=" + name}
}
