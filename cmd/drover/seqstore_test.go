package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/internal/ratelog"
)

func sealN(t *testing.T, sa *esp.OutSA, n int) {
	t.Helper()
	buf := make([]byte, esp.Headroom+20+esp.Tailroom)
	for range n {
		buf[esp.Headroom] = 0x45
		if _, err := sa.Seal(buf, esp.Headroom, 20); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSeqStoreRestart: a restarted SA with the same key resumes beyond every
// number the previous run may have used; a new key starts at 1.
func TestSeqStoreRestart(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	key := make([]byte, esp.AES128GCM.KeyLen())

	st, err := newSeqStore(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	sa1, _ := esp.NewOutSA(esp.AES128GCM, 0x100, key, false)
	if err := st.add(sa1, key); err != nil {
		t.Fatal(err)
	}
	sealN(t, sa1, 5)
	fi, err := os.Stat(st.fileFor(0x100, key))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("record mode %o, want 600", perm)
	}

	// "Restart": a new store and SA over the same directory and key.
	st2, _ := newSeqStore(dir, log)
	sa2, _ := esp.NewOutSA(esp.AES128GCM, 0x100, key, false)
	if err := st2.add(sa2, key); err != nil {
		t.Fatal(err)
	}
	sealN(t, sa2, 1)
	if got, min := sa2.Seq(), uint64(seqBlock)+1; got < min {
		t.Fatalf("after restart the first seq is %d, want >= %d (beyond the old reservation)", got, min)
	}

	other := make([]byte, len(key))
	other[0] = 1
	sa3, _ := esp.NewOutSA(esp.AES128GCM, 0x100, other, false)
	if err := st2.add(sa3, other); err != nil {
		t.Fatal(err)
	}
	sealN(t, sa3, 1)
	if got := sa3.Seq(); got != 1 {
		t.Fatalf("new key: first seq %d, want 1", got)
	}
}

// TestSeqStoreRenew: the background loop renews a half-used reservation, so
// a long run never stops at the first block.
func TestSeqStoreRenew(t *testing.T) {
	st, _ := newSeqStore(t.TempDir(), slog.New(slog.DiscardHandler))
	key := make([]byte, esp.AES128GCM.KeyLen())
	sa, _ := esp.NewOutSA(esp.AES128GCM, 0x100, key, false)
	if err := st.add(sa, key); err != nil {
		t.Fatal(err)
	}
	if err := sa.Resume(seqBlock/2 + 10); err != nil { // as if half the block were used
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { st.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(st.fileFor(0x100, key))
		if string(b) == "2097152\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %q, want the second block 2097152", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSeqStoreCorrupt(t *testing.T) {
	dir := t.TempDir()
	st, _ := newSeqStore(dir, slog.New(slog.DiscardHandler))
	key := make([]byte, esp.AES128GCM.KeyLen())
	if err := os.WriteFile(st.fileFor(0x100, key), []byte("banana"), 0o600); err != nil {
		t.Fatal(err)
	}
	sa, _ := esp.NewOutSA(esp.AES128GCM, 0x100, key, false)
	if err := st.add(sa, key); err == nil {
		t.Fatal("corrupt record: got nil error, want a refusal")
	}
}

// TestSeqStoreRenewFailureFlood: a renewal that keeps failing (the record
// cannot be replaced) is retried every tick; its log lines are a few per
// SA, not one per tick, and the renewal that succeeds again says so.
func TestSeqStoreRenewFailureFlood(t *testing.T) {
	var logs bytes.Buffer
	st, err := newSeqStore(t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	spis := []uint32{0x100, 0x200}
	var keys [][]byte
	for _, spi := range spis {
		key := make([]byte, esp.AES128GCM.KeyLen())
		key[0] = byte(spi >> 8)
		sa, _ := esp.NewOutSA(esp.AES128GCM, spi, key, false)
		if err := st.add(sa, key); err != nil {
			t.Fatal(err)
		}
		if err := sa.Resume(seqBlock/2 + 10); err != nil { // half the block used
			t.Fatal(err)
		}
		// A directory where the record belongs: the rename over it
		// fails, for root too (file modes would not stop root).
		if err := os.Remove(st.fileFor(spi, key)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := os.Mkdir(st.fileFor(spi, key), 0o700); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	count := func(msg string) int {
		return strings.Count(logs.String(), `msg="`+msg+`"`)
	}
	const ticks = 1000 // 20 s of the 20 ms ticker
	for range ticks {
		st.renew()
	}
	got := count("renew sequence reservation")
	t.Logf("%d ticks with %d failing SAs: %d log lines", ticks, len(spis), got)
	if want := ratelog.Burst * len(spis); got != want {
		t.Fatalf("log lines for %d failing renewals of %d SAs: got %d, want %d", ticks, len(spis), got, want)
	}
	for i, spi := range spis {
		if err := os.Remove(st.fileFor(spi, keys[i])); err != nil {
			t.Fatal(err)
		}
	}
	st.renew()
	if got, want := count("sequence reservation renewed"), len(spis); got != want {
		t.Fatalf("lines saying the renewal works again: got %d, want %d", got, want)
	}
	for i, spi := range spis {
		b, _ := os.ReadFile(st.fileFor(spi, keys[i]))
		if want := "2097152\n"; string(b) != want {
			t.Errorf("SPI %#x record: got %q, want %q", spi, b, want)
		}
	}
}
