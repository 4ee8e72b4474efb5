package lab

import (
	"context"
	"fmt"
	"time"
)

// Poll calls check every interval until it returns nil or ctx/timeout ends,
// and returns the last error (wrapped with how long it waited). Tests use it
// instead of sleeping.
func Poll(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %v: %w", time.Since(start).Round(time.Millisecond), err)
		case <-t.C:
		}
	}
}
