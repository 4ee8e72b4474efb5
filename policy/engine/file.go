package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/drovernet/drover/policy"
)

// LoadFile reads and validates a policy file (policy.Parse).
func LoadFile(path, defaultNS string) (*policy.Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	set, err := policy.Parse(b, defaultNS)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, nil
}

// WatchFile rereads path every interval and hands the engine every new
// valid content. A file that no longer parses (or is gone) is reported,
// logged with every error it has, and changes nothing enforced: the last
// valid policies stay until the file is fixed. Polling, not inotify: it
// also sees a file replaced by rename (as editors and ConfigMap updates
// do) and a directory mounted later, and costs one stat per interval.
func (e *Engine) WatchFile(ctx context.Context, path, defaultNS string, last []byte, interval time.Duration) {
	var lastErr string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Equal(b, last) {
			continue
		}
		var set *policy.Set
		if err == nil {
			set, err = policy.Parse(b, defaultNS)
		}
		if err != nil {
			if err.Error() != lastErr { // once per distinct error
				e.log.Error("policy file not applied; the last valid policies stay enforced", "file", path, "err", err)
				lastErr = err.Error()
			}
			e.SourceError(fmt.Errorf("%s: %w", path, err))
			continue
		}
		last, lastErr = b, ""
		e.SetPolicies(set)
		e.log.Info("policy file reloaded", "file", path, "policies", len(set.Policies), "namespaces", len(set.Namespaces))
	}
}
