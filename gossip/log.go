package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/drovernet/drover/internal/ratelog"
)

// logWriter turns memberlist's *log.Logger lines ("[WARN] memberlist: …")
// into slog records at the level the prefix names. memberlist logs some
// things once per packet received (a packet that fails to decrypt, from a
// host with the wrong key, is one line each), so each kind of line — its
// level and first three words — is let through at most logBurst times per
// logWindow; the next line of that kind after a quiet window carries the
// count of those suppressed.
//
// It also watches for the one line that says this host's own probes of a
// member failed (memberlist has no event for that), and reports it through
// onSuspect, whatever the log level.
type logWriter struct {
	log       *slog.Logger
	onSuspect func(name string)
	now       func() time.Time // the limiter's clock; tests replace it
	lim       *ratelog.Limiter
}

const (
	logWindow = time.Second
	logBurst  = 3
)

// suspectPrefix and suspectSuffix frame the node name in memberlist v0.6.0's
// state.go probeNode: "[INFO] memberlist: Suspect %s has failed, no acks received".
const (
	suspectPrefix = "Suspect "
	suspectSuffix = " has failed, no acks received"
)

func newLogWriter(log *slog.Logger, onSuspect func(string)) *logWriter {
	w := &logWriter{log: log, onSuspect: onSuspect, now: time.Now}
	w.lim = ratelog.NewLimiter(logWindow, logBurst, func() time.Time { return w.now() })
	return w
}

// Write takes one line from the log.Logger (which calls Write once per line).
func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(p)
	if level == slog.LevelInfo && w.onSuspect != nil && strings.HasPrefix(msg, suspectPrefix) && strings.HasSuffix(msg, suspectSuffix) {
		w.onSuspect(msg[len(suspectPrefix) : len(msg)-len(suspectSuffix)])
	}
	if !w.log.Enabled(context.Background(), level) {
		return len(p), nil
	}
	suppressed, ok := w.allow(level, msg)
	if !ok {
		return len(p), nil
	}
	if suppressed > 0 {
		w.log.Log(context.Background(), level, msg, "suppressed", suppressed)
	} else {
		w.log.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

// allow applies the per-kind limit; it returns how many lines of this kind
// were dropped before this one.
func (w *logWriter) allow(level slog.Level, msg string) (int, bool) {
	ok, suppressed := w.lim.Allow(level.String() + " " + firstWords(msg, 3))
	return suppressed, ok
}

func firstWords(s string, n int) string {
	for i := range len(s) {
		if s[i] == ' ' {
			if n--; n == 0 {
				return s[:i]
			}
		}
	}
	return s
}

// parseLogLine splits "[LEVEL] memberlist: text\n" into a level and "text".
// Lines without a known level are Info.
func parseLogLine(p []byte) (slog.Level, string) {
	p = bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	if len(p) > 0 && p[0] == '[' {
		if end := bytes.IndexByte(p, ']'); end > 0 {
			switch string(p[1:end]) {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			p = bytes.TrimLeft(p[end+1:], " ")
		}
	}
	p = bytes.TrimPrefix(p, []byte("memberlist: "))
	return level, string(p)
}
