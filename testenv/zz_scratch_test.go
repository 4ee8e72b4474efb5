package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
	"errors"
)

func TestZZScratch(t *testing.T) {
	bin := DroverBinary(t)
	tag, dir := testTag(), t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	go Poll(ctx, 30*time.Second, time.Millisecond, func() error {
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		if len(logs) == 0 {
			return errors.New("x")
		}
		cancel()
		return nil
	})
	start := time.Now()
	_, err := NewLab(ctx, LabOptions{Hosts: 3, Containers: 2, Tag: tag, Bin: bin, Dir: dir})
	t.Logf("after %v: %v", time.Since(start), err)
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		t.Logf("%s:\n%s", l, b)
	}
}
