package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/internal/durable"
	"github.com/drovernet/drover/internal/ratelog"
)

// seqBlock is how many sequence numbers one reservation covers. A restart
// skips at most this many (2^32 / 2^20 = 4096 restarts per manual key
// without ESN); the store renews when half is used, so at 1 Mpps a renewal
// has half a second to reach the disk before Seal would have to wait.
const seqBlock = 1 << 20

// seqStore keeps, per outbound SA with manual keys, the highest sequence
// number the SA may have used, in state_dir, so that a restarted daemon
// resumes beyond it and never sends the same (key, seq) twice (RFC 4303
// §3.3.3; with AEADs a repeated pair would also repeat the nonce if the IV
// repeated). The record is written (fsync, rename) before the SA may use the
// numbers it covers.
type seqStore struct {
	dir string
	log *slog.Logger // rate-limited (ratelog): run retries every tick
	sas []seqSA
}

type seqSA struct {
	sa   *esp.OutSA
	path string
	upTo uint64 // reserved and durable
	// failing is set while renewals fail, so that the one that succeeds
	// again says so.
	failing bool
}

func newSeqStore(dir string, log *slog.Logger) (*seqStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	return &seqStore{dir: dir, log: ratelog.New(log, 0, 0)}, nil
}

// fileFor names the record after the SPI and a fingerprint of the key (the
// key itself is never written): a new key starts a new record.
func (st *seqStore) fileFor(spi uint32, key []byte) string {
	h := sha256.Sum256(key)
	return filepath.Join(st.dir, fmt.Sprintf("seq-%08x-%s", spi, hex.EncodeToString(h[:8])))
}

// add resumes sa after its recorded high-water mark and reserves the first
// block.
func (st *seqStore) add(sa *esp.OutSA, key []byte) error {
	path := st.fileFor(sa.SPI(), key)
	var last uint64
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		last, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return fmt.Errorf("sequence record %s is corrupt (%w); refusing to guess: remove it only together with a key change", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("sequence record %s: %w", path, err)
	}
	if err := sa.Resume(last + 1); err != nil {
		return fmt.Errorf("SPI %#08x: %w (the manual key must be changed)", sa.SPI(), err)
	}
	s := seqSA{sa: sa, path: path}
	if err := st.reserve(&s, last+seqBlock); err != nil {
		return err
	}
	if last > 0 {
		st.log.Info("sequence numbers resumed", "spi", fmt.Sprintf("%#08x", sa.SPI()), "next", last+1)
	}
	st.sas = append(st.sas, s)
	return nil
}

func (st *seqStore) reserve(s *seqSA, upTo uint64) error {
	if err := durable.WriteFile(s.path, []byte(strconv.FormatUint(upTo, 10)+"\n")); err != nil {
		return fmt.Errorf("sequence record %s: %w", s.path, err)
	}
	s.upTo = upTo
	s.sa.Reserve(upTo)
	return nil
}

// run renews reservations that are half used until ctx is done.
func (st *seqStore) run(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st.renew()
	}
}

// renew extends every reservation that is half used. A failure is retried
// on the next tick, 20 ms later, so its log line is rate-limited (per SPI).
func (st *seqStore) renew() {
	for i := range st.sas {
		s := &st.sas[i]
		if s.sa.Seq()+seqBlock/2 < s.upTo {
			continue
		}
		spi := fmt.Sprintf("%#08x", s.sa.SPI())
		if err := st.reserve(s, s.upTo+seqBlock); err != nil {
			// Seal stops at the old reservation (counted as
			// seq_not_reserved) rather than risk reuse.
			st.log.Error("renew sequence reservation", "spi", spi, "err", err)
			s.failing = true
			continue
		}
		if s.failing {
			s.failing = false
			st.log.Info("sequence reservation renewed", "spi", spi, "up_to", s.upTo)
		}
	}
}
