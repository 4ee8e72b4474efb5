package kube

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	LogTo(slog.New(slog.DiscardHandler)) // expected reflector errors in TestPublishAndServerAway
	os.Exit(m.Run())
}
