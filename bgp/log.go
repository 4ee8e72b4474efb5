package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"

	"github.com/drovernet/drover/internal/ratelog"
)

// logger is GoBGP's log.Logger over slog. GoBGP logs per message and per
// connection attempt (a neighbour that keeps refusing, one that sends
// garbage), so lines are rate-limited per neighbour and message
// (ratelog), and GoBGP's info level is drover's debug: session changes
// are logged by the speaker itself. A warning or error about a neighbour
// is also remembered as its last error (NeighborStatus.LastError).
type logger struct {
	log   *slog.Logger
	level gobgplog.LogLevel
	note  func(neighbor, msg string)
}

func newLogger(l *slog.Logger, note func(neighbor, msg string)) *logger {
	return &logger{log: ratelog.New(l.With("component", "bgp"), 0, 0), level: gobgplog.InfoLevel, note: note}
}

// attrs turns GoBGP's fields into slog attributes, sorted; the
// neighbour ("Key" with topic Peer) becomes "peer", a rate-limit key.
func attrs(f gobgplog.Fields) (neighbor string, out []any) {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := f[k]
		if k == "Key" && f["Topic"] == "Peer" {
			neighbor = fmt.Sprint(v)
			out = append(out, "peer", neighbor)
			continue
		}
		if k == "Topic" || k == gobgplog.FieldFacility {
			continue
		}
		out = append(out, strings.ToLower(k), fmt.Sprint(v))
	}
	return neighbor, out
}

func (l *logger) emit(level slog.Level, msg string, f gobgplog.Fields) {
	neighbor, a := attrs(f)
	if level >= slog.LevelWarn && neighbor != "" && l.note != nil {
		var b strings.Builder
		b.WriteString(msg)
		for i := 0; i+1 < len(a); i += 2 {
			if a[i] != "peer" {
				fmt.Fprintf(&b, " %v=%v", a[i], a[i+1])
			}
		}
		l.note(neighbor, b.String())
	}
	l.log.Log(context.Background(), level, "bgp: "+msg, a...)
}

func (l *logger) Panic(msg string, f gobgplog.Fields) {
	l.emit(slog.LevelError, msg, f)
	panic(msg)
}
func (l *logger) Fatal(msg string, f gobgplog.Fields) {
	// GoBGP calls Fatal where gobgpd would exit; a library user keeps
	// running, and the speaker's own calls report the failure.
	l.emit(slog.LevelError, msg, f)
}
func (l *logger) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l *logger) Info(msg string, f gobgplog.Fields) {
	if l.level >= gobgplog.InfoLevel {
		l.emit(slog.LevelDebug, msg, f)
	}
}
func (l *logger) Debug(msg string, f gobgplog.Fields) {
	// Why a session went back to idle is only in GoBGP's debug line
	// "state changed" (a NOTIFICATION sent or received: a bad AS, a
	// malformed message; a read failure; the hold timer): the operator's
	// first question, so it is logged and kept as the last error.
	if msg == "state changed" && strings.HasSuffix(fmt.Sprint(f["new"]), "IDLE") {
		if r := fmt.Sprint(f["reason"]); r != "" && r != "<nil>" && r != "dying" && r != "admin-down" {
			neighbor, _ := attrs(f)
			if l.note != nil && neighbor != "" {
				l.note(neighbor, resetPrefix+r)
			}
			l.log.Warn("bgp session reset", "peer", neighbor, "reason", r)
			return
		}
	}
	if l.level >= gobgplog.DebugLevel {
		l.emit(slog.LevelDebug-4, msg, f)
	}
}
func (l *logger) SetLevel(level gobgplog.LogLevel) { l.level = level }
func (l *logger) GetLevel() gobgplog.LogLevel      { return l.level }
