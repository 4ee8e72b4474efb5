package bgp

import (
	"context"
	"log/slog"
	"strings"

	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/drovernet/drover/internal/ratelog"
)

// newLogger is the slog.Logger GoBGP logs to: drover's, rate-limited
// (GoBGP logs per message and per connection attempt: a neighbour that
// keeps refusing or sends garbage would flood the log), with GoBGP's
// neighbour attribute ("Key" beside "Topic": "Peer") renamed "peer", so
// that one neighbour's lines do not hide another's (ratelog keys on it).
// A warning or error about a neighbour is also its last error (note).
func newLogger(l *slog.Logger, note func(neighbor, msg string)) *slog.Logger {
	rl := ratelog.New(l.With("component", "bgp"), 0, 0)
	return slog.New(&peerHandler{next: rl.Handler(), note: note})
}

// peerHandler renames GoBGP's attributes and notes warnings.
type peerHandler struct {
	next slog.Handler
	peer string // from WithAttrs
	note func(neighbor, msg string)
}

// Enabled: GoBGP's info level is drover's debug (it logs every peer
// added and every connection attempt), but for NOTIFICATIONs, which
// Handle raises to warnings.
// A neighbour's errors are noted whatever the log level.
func (h *peerHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l) || l >= slog.LevelInfo && h.note != nil
}

func (h *peerHandler) Handle(ctx context.Context, r slog.Record) error {
	peer := h.peer
	level := r.Level
	notification := strings.HasSuffix(r.Message, " notification") // "sent notification", "received notification"
	switch {
	case notification && level < slog.LevelWarn:
		level = slog.LevelWarn // a session reset, and why
	case level == slog.LevelInfo:
		level = slog.LevelDebug
	}
	out := slog.NewRecord(r.Time, level, "bgp: "+r.Message, r.PC)
	var detail strings.Builder
	var code, subcode int64 = -1, -1
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "Key":
			peer = a.Value.String()
		case "Topic":
		case "Code":
			code = a.Value.Int64()
		case "Subcode":
			subcode = a.Value.Int64()
		default:
			out.AddAttrs(slog.Attr{Key: strings.ToLower(a.Key), Value: a.Value})
			if v := a.Value.String(); v != "" {
				detail.WriteString(" " + strings.ToLower(a.Key) + "=" + v)
			}
		}
		return true
	})
	if code >= 0 && subcode >= 0 {
		// RFC 4271 §4.5 error code and subcode, by name.
		e := gobgp.NewNotificationErrorCode(uint8(code), uint8(subcode)).String()
		out.AddAttrs(slog.String("error", e))
		detail.Reset()
		detail.WriteString(": " + e)
	}
	if peer != "" && h.peer == "" {
		out.AddAttrs(slog.String("peer", peer))
	}
	if level >= slog.LevelWarn && peer != "" && h.note != nil {
		h.note(peer, r.Message+detail.String())
	}
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	return h.next.Handle(ctx, out)
}

func (h *peerHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	var keep []slog.Attr
	for _, a := range as {
		switch a.Key {
		case "Key":
			n.peer = a.Value.String()
			keep = append(keep, slog.String("peer", n.peer))
		case "Topic":
		default:
			keep = append(keep, slog.Attr{Key: strings.ToLower(a.Key), Value: a.Value})
		}
	}
	n.next = h.next.WithAttrs(keep)
	return &n
}

func (h *peerHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.next = h.next.WithGroup(name)
	return &n
}
