package esp

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/drovernet/drover/crypto/replay"
)

// Errors. Seal and Open return these sentinels unwrapped (they map one to one
// onto drop counters); the constructors wrap ErrKey and ErrCipher with %w and
// say what was wrong.
var (
	ErrShort        = errors.New("esp: packet too short")
	ErrSPI          = errors.New("esp: SPI does not match the SA")
	ErrAuth         = errors.New("esp: authentication failed")
	ErrReplay       = errors.New("esp: replayed sequence number")
	ErrStale        = errors.New("esp: sequence number older than the replay window")
	ErrPadding      = errors.New("esp: pad length exceeds the payload")
	ErrNextHeader   = errors.New("esp: next header is not IPv4 (4) or IPv6 (41)")
	ErrSeqExhausted = errors.New("esp: sequence numbers exhausted")
	// ErrSeqReserve: the next sequence number lies beyond the durable
	// reservation (OutSA.Reserve); the owner has not recorded it yet.
	ErrSeqReserve = errors.New("esp: sequence number beyond the durable reservation")
	ErrBuffer     = errors.New("esp: buffer lacks headroom or tailroom")
	ErrKey        = errors.New("esp: bad key material")
	ErrCipher     = errors.New("esp: unknown cipher")
)

// Anti-replay window sizes for NewInSA, in packets.
const (
	DefaultWindow = replay.DefaultSize // drover's default
	MaxWindow     = replay.MaxSize     // the largest NewInSA accepts
)

// scratch holds the nonce (salt‖IV, 12 bytes) and, with ESN, the 12-byte AAD
// of one Seal or Open. Both go to cipher.AEAD, an interface, so a stack array
// would escape and cost an allocation per packet, and one array per SA would
// need a lock; a pool gives each concurrent caller its own without either.
type scratch [24]byte

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// OutSA is an outbound (egress) security association. Seal is safe for
// concurrent use: the sequence number is the only mutable state and is
// claimed atomically.
type OutSA struct {
	aead  cipher.AEAD // built once; immutable
	salt  [saltLen]byte
	spi   uint32
	esn   bool
	limit uint64 // last sequence number that may be sent
	// ivMask makes IV = seq XOR ivMask, the kernel's seqiv: unique per packet
	// because seq is, and not predictable from seq alone (RFC 4106 §3.1,
	// RFC 7634 §2 only require uniqueness).
	ivMask uint64
	seq    atomic.Uint64 // last sequence number claimed; 0 = none yet
	// reserved is the last sequence number the owner has made durable (see
	// Reserve); 0 means no reservation is in force.
	reserved atomic.Uint64
}

// NewOutSA returns an outbound SA. keymat is the key followed by the 4-byte
// salt, Cipher.KeyLen bytes, as given to ip xfrm state. With esn the SA uses
// 64-bit Extended Sequence Numbers (RFC 4303 §2.2.1) and authenticates seq_hi
// in the AAD. The IV mask is drawn from crypto/rand.
func NewOutSA(c Cipher, spi uint32, keymat []byte, esn bool) (*OutSA, error) {
	if spi == 0 {
		return nil, errSPIZero
	}
	a, salt, err := newAEAD(c, keymat)
	if err != nil {
		return nil, err
	}
	s := &OutSA{aead: a, salt: salt, spi: spi, esn: esn, limit: math.MaxUint32}
	if esn {
		s.limit = math.MaxUint64
	}
	var m [8]byte
	if _, err := rand.Read(m[:]); err != nil {
		return nil, fmt.Errorf("esp: IV mask: %w", err)
	}
	s.ivMask = binary.BigEndian.Uint64(m[:])
	return s, nil
}

// errSPIZero: SPI 0 is reserved (RFC 4303 §2.1) and on UDP/4500 it is the
// non-ESP marker (RFC 3948 §2.2), so no receiver could ever see the packet.
var errSPIZero = errors.New("esp: SPI 0 is reserved (RFC 4303 §2.1)")

// SPI returns the SA's Security Parameters Index.
func (s *OutSA) SPI() uint32 { return s.spi }

// Seq returns the last sequence number used (0 before the first Seal).
func (s *OutSA) Seq() uint64 { return s.seq.Load() }

// Resume makes next the sequence number of the following Seal. An owner that
// keeps manual keys across restarts calls it before the first Seal with a
// number beyond anything the previous run may have sent, so no (key, seq)
// pair is ever used twice (RFC 4303 §3.3.3). It refuses to go backwards.
func (s *OutSA) Resume(next uint64) error {
	if next == 0 || next-1 > s.limit {
		return fmt.Errorf("%w: cannot resume at %d (limit %d)", ErrSeqExhausted, next, s.limit)
	}
	for {
		cur := s.seq.Load()
		if next-1 < cur {
			return fmt.Errorf("esp: resume at %d: sequence number %d already used", next, cur)
		}
		if s.seq.CompareAndSwap(cur, next-1) {
			return nil
		}
	}
}

// Reserve allows Seal to use sequence numbers up to and including upTo; once
// a reservation is in force, Seal returns ErrSeqReserve beyond it. The owner
// records upTo durably before calling Reserve, so a crash at any point
// leaves a record at or beyond every number sent. Reservations only grow.
func (s *OutSA) Reserve(upTo uint64) {
	for {
		cur := s.reserved.Load()
		if upTo <= cur || s.reserved.CompareAndSwap(cur, upTo) {
			return
		}
	}
}

// nextSeq claims the next sequence number. Numbers start at 1 and are never
// reused (RFC 4303 §3.3.3): without ESN the SA stops after 0xffffffff like the
// kernel without oseq-may-wrap; with ESN the 64-bit counter continues through
// seq_lo 0.
func (s *OutSA) nextSeq() (uint64, error) {
	for {
		cur := s.seq.Load()
		if cur >= s.limit {
			return 0, ErrSeqExhausted
		}
		if r := s.reserved.Load(); r != 0 && cur >= r {
			return 0, ErrSeqReserve
		}
		if s.seq.CompareAndSwap(cur, cur+1) {
			return cur + 1, nil
		}
	}
}

// Seal encrypts the inner packet buf[off:off+n] (IPv4 or IPv6; the next
// header, 4 or 41, comes from its version nibble) in place, the way the
// kernel's esp4 does in tunnel mode.
//
// buf[off-Headroom:off] must exist and receives SPI, seq and IV; the pad,
// trailer and ICV go after the packet, within cap(buf) ≥ off+n+Tailroom.
// Seal returns buf[off-Headroom:off-Headroom+SealedLen(n)]: the UDP payload
// SPI|seq|IV|ciphertext|ICV. The pad is minimal (n+pad+2 ≡ 0 mod 4) with
// bytes 1, 2, 3, … (RFC 4303 §2.4). Errors: ErrBuffer, ErrShort (n < 1),
// ErrNextHeader (not IPv4/IPv6), ErrSeqExhausted. No sequence number is used
// up by a call that fails.
func (s *OutSA) Seal(buf []byte, off, n int) ([]byte, error) {
	if n < 1 {
		return nil, ErrShort
	}
	if off < Headroom || n > cap(buf)-off || padLen(n)+2+ICVLen > cap(buf)-off-n {
		return nil, ErrBuffer
	}
	b := buf[:cap(buf)]
	return s.seal(b[off-Headroom:off], b[off:off+n], b[off:off])
}

// SealTo is Seal for a packet that cannot grow in place (a segment in the
// middle of a larger buffer): it writes the ESP packet for the inner packet
// pkt into dst, which needs cap(dst) ≥ SealedLen(len(pkt)) and must not
// overlap pkt, and returns it.
//
// The pad and trailer are part of the encrypted plaintext, which the AEAD
// takes in one piece, so they are written for the moment just after pkt:
// cap(pkt) − len(pkt) must be at least MaxTrailer. Those bytes (the start of
// whatever follows pkt in its buffer) are put back before SealTo returns.
// Errors and sequence numbers as for Seal.
func (s *OutSA) SealTo(dst, pkt []byte) ([]byte, error) {
	n := len(pkt)
	if n < 1 {
		return nil, ErrShort
	}
	t := padLen(n) + 2
	if cap(pkt)-n < t || cap(dst) < Headroom+n+t+ICVLen {
		return nil, ErrBuffer
	}
	var saved [MaxTrailer]byte
	after := pkt[n : n+t]
	copy(saved[:], after)
	out, err := s.seal(dst[:Headroom], pkt, dst[Headroom:Headroom])
	copy(after, saved[:t])
	return out, err
}

// MaxTrailer is the most plaintext ESP adds after the inner packet: three
// pad bytes, the pad length and the next header.
const MaxTrailer = 3 + 2

// seal claims a sequence number, fills hdr (Headroom bytes, followed in
// memory by ct) with SPI, seq and IV, appends the pad and trailer to pkt
// (within its capacity) and encrypts the plaintext into ct (ct[:0] of the
// output; pkt[:0] itself for in-place sealing). It returns hdr through the
// ICV.
func (s *OutSA) seal(hdr, pkt, ct []byte) ([]byte, error) {
	var nh byte
	switch pkt[0] >> 4 {
	case 4:
		nh = NextHeaderIPv4
	case 6:
		nh = NextHeaderIPv6
	default:
		return nil, ErrNextHeader
	}
	seq, err := s.nextSeq()
	if err != nil {
		return nil, err
	}
	n := len(pkt)
	pad := padLen(n)
	pt := pkt[:n+pad+2]
	t := pt[n:]
	for i := range pad {
		t[i] = byte(i + 1)
	}
	t[pad] = byte(pad)
	t[pad+1] = nh

	binary.BigEndian.PutUint32(hdr[0:4], s.spi)
	binary.BigEndian.PutUint32(hdr[4:8], uint32(seq))
	binary.BigEndian.PutUint64(hdr[8:16], seq^s.ivMask)

	sc := scratchPool.Get().(*scratch)
	nonce := sc[:12]
	copy(nonce, s.salt[:])
	copy(nonce[saltLen:], hdr[8:16])
	aad := hdr[0:8] // SPI‖seq, exactly the wire header
	if s.esn {
		aad = esnAAD(sc, s.spi, seq)
	}
	out := s.aead.Seal(ct, nonce, pt, aad)
	scratchPool.Put(sc)
	return hdr[: Headroom+len(out) : Headroom+len(out)], nil
}

// esnAAD writes SPI‖seq_hi‖seq_lo into sc[12:24] (RFC 4106 §5, RFC 7634 §2.1:
// seq_hi is authenticated but never sent).
func esnAAD(sc *scratch, spi uint32, seq uint64) []byte {
	aad := sc[12:24]
	binary.BigEndian.PutUint32(aad[0:4], spi)
	binary.BigEndian.PutUint64(aad[4:12], seq)
	return aad
}

// InSA is an inbound (ingress) security association. Open is safe for
// concurrent use: decryption runs in parallel, and mu serialises only the
// replay window's Check and Update.
type InSA struct {
	aead cipher.AEAD // built once; immutable
	salt [saltLen]byte
	spi  uint32
	esn  bool

	mu     sync.Mutex    // protects window
	window replay.Window // 64-bit sequence numbers (seq_hi 0 without ESN)
}

// NewInSA returns an inbound SA; c, spi, keymat and esn as for NewOutSA.
// window is the anti-replay window in packets (RFC 4303 §3.4.3, the kernel's
// replay-window): 0 disables anti-replay, like the kernel, and sizes up to
// MaxWindow are honoured exactly (DefaultWindow is the usual choice). ESN needs a window: the receiver infers seq_hi from it (iproute2
// likewise refuses "esn flag set without replay-window").
func NewInSA(c Cipher, spi uint32, keymat []byte, esn bool, window int) (*InSA, error) {
	if spi == 0 {
		return nil, errSPIZero
	}
	if esn && window == 0 {
		return nil, errors.New("esp: ESN needs a replay window (RFC 4303 Appendix A2)")
	}
	a, salt, err := newAEAD(c, keymat)
	if err != nil {
		return nil, err
	}
	s := &InSA{aead: a, salt: salt, spi: spi, esn: esn}
	if err := s.window.Init(window); err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	return s, nil
}

// SPI returns the SA's Security Parameters Index.
func (s *InSA) SPI() uint32 { return s.spi }

// Open authenticates and decrypts the ESP packet pkt (the UDP payload, from
// the SPI on) in place and returns the inner packet, a sub-slice of pkt, and
// its next header (4 or 41). pkt is modified even when Open fails.
//
// The order is the kernel's (xfrm_input, esp_input): length and SPI checks;
// replay Check (ErrReplay, ErrStale), cheap and before any crypto; AEAD open
// (ErrAuth); the pad length (ErrPadding); only then replay Update, so a
// packet that fails authentication does not consume its sequence number;
// last the next header (ErrNextHeader; the sequence number is consumed, as
// in the kernel). Pad contents are not checked, as in the kernel.
func (s *InSA) Open(pkt []byte) (inner []byte, nextHeader byte, err error) {
	if len(pkt) < minLen {
		return nil, 0, ErrShort
	}
	if binary.BigEndian.Uint32(pkt[0:4]) != s.spi {
		return nil, 0, ErrSPI
	}
	lo := binary.BigEndian.Uint32(pkt[4:8])
	seq := uint64(lo)
	s.mu.Lock()
	if s.esn {
		seq = s.window.InferHigh(lo)
	}
	err = s.window.Check(seq)
	s.mu.Unlock()
	if err != nil {
		return nil, 0, replayErr(err)
	}

	sc := scratchPool.Get().(*scratch)
	nonce := sc[:12]
	copy(nonce, s.salt[:])
	copy(nonce[saltLen:], pkt[HeaderLen:Headroom])
	aad := pkt[0:8]
	if s.esn {
		aad = esnAAD(sc, s.spi, seq)
	}
	ct := pkt[Headroom:]
	pt, err := s.aead.Open(ct[:0], nonce, ct, aad)
	scratchPool.Put(sc)
	if err != nil {
		return nil, 0, ErrAuth
	}

	// The kernel (esp_remove_trailer) wants at least one inner byte.
	pad := int(pt[len(pt)-2])
	if pad+2 >= len(pt) {
		return nil, 0, ErrPadding
	}
	s.mu.Lock()
	err = s.window.Update(seq)
	s.mu.Unlock()
	if err != nil { // a concurrent Open of the same seq won
		return nil, 0, replayErr(err)
	}
	nh := pt[len(pt)-1]
	if nh != NextHeaderIPv4 && nh != NextHeaderIPv6 {
		return nil, 0, ErrNextHeader
	}
	return pt[:len(pt)-2-pad], nh, nil
}

func replayErr(err error) error {
	if err == replay.ErrStale {
		return ErrStale
	}
	return ErrReplay
}
