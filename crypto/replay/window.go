package replay

import (
	"errors"
	"fmt"
)

// Sentinels returned by Check and Update. They are distinct so that callers
// can count them separately, like the kernel's "replay" and "replay-window"
// SA statistics.
var (
	// ErrReplay: the sequence number is inside the window and was already
	// received.
	ErrReplay = errors.New("replay: duplicate sequence number")
	// ErrStale: the sequence number is older than the window (or is 0, which
	// precedes every window because senders start at 1).
	ErrStale = errors.New("replay: sequence number older than the window")
)

const (
	// DefaultSize is the window size drover uses when none is configured.
	DefaultSize = 1024
	// MaxSize is the largest window Init accepts (8 KiB of bitmap).
	MaxSize = 1 << 16
)

const (
	blockBits = 64 // bits per bitmap block (RFC 6479 "bitmap word")
	blockLog  = 6  // log2(blockBits)
)

// Window is the anti-replay state of one inbound SA, over 64-bit sequence
// numbers (with ESN, the full seq_hi‖seq_lo; without, seq_hi is 0).
//
// The zero value is a disabled window (size 0) that accepts everything.
// A Window is not safe for concurrent use.
type Window struct {
	size uint64 // configured width in packets; 0 disables the window
	top  uint64 // highest sequence number received (or set by Reset)
	// blocks is a ring: sequence number s lives in bit s%64 of
	// blocks[(s/64)&mask]. Blocks are cleared whole as top moves forward
	// (RFC 6479 §2), so len(blocks) exceeds the window by at least one block.
	blocks []uint64
	mask   uint64 // len(blocks) - 1; len(blocks) is a power of two
}

// New returns a Window of the given size; see Init.
func New(size int) (*Window, error) {
	w := new(Window)
	if err := w.Init(size); err != nil {
		return nil, err
	}
	return w, nil
}

// Init (re)initialises w to a window of size packets with nothing received.
// Size 0 disables anti-replay, like the kernel's replay-window 0; sizes from
// 1 to MaxSize are honoured exactly (the bitmap storage is rounded up).
func (w *Window) Init(size int) error {
	if size < 0 || size > MaxSize {
		return fmt.Errorf("replay: window size %d out of range [0, %d]", size, MaxSize)
	}
	*w = Window{size: uint64(size)}
	if size == 0 {
		return nil
	}
	// A window of size bits touches at most ceil(size/64)+1 blocks at once
	// (its bottom can sit anywhere inside a block); round up to a power of
	// two so the ring index is a mask.
	need := (size+blockBits-1)/blockBits + 1
	n := 1
	for n < need {
		n <<= 1
	}
	w.blocks = make([]uint64, n)
	w.mask = uint64(n - 1)
	return nil
}

// Size returns the configured window size (0 when disabled).
func (w *Window) Size() int { return int(w.size) }

// Top returns the highest sequence number received so far (or the value
// given to Reset); 0 before anything was received.
func (w *Window) Top() uint64 { return w.top }

// Reset forgets every received sequence number and makes top the highest one
// seen, without marking top itself as received. It mirrors the kernel's
// initial replay state (ip xfrm state … replay-seq LO replay-seq-hi HI), e.g.
// an ESN SA that starts at seq_hi 1 is Reset(1<<32).
func (w *Window) Reset(top uint64) {
	clear(w.blocks)
	w.top = top
}

// Check reports whether seq would be accepted, without changing the window.
// It is the cheap test done before decryption (RFC 4303 §3.4.3).
func (w *Window) Check(seq uint64) error {
	if w.size == 0 {
		return nil
	}
	if seq == 0 {
		return ErrStale
	}
	if seq > w.top {
		return nil
	}
	if w.top-seq >= w.size {
		return ErrStale
	}
	if w.blocks[(seq>>blockLog)&w.mask]&(1<<(seq&(blockBits-1))) != 0 {
		return ErrReplay
	}
	return nil
}

// Update marks seq as received, sliding the window forward if seq is above
// the highest sequence number seen. It repeats Check first and returns its
// error without changing anything, so of two packets carrying the same
// sequence number that both passed Check, only the first Update wins. Call it
// only after the packet's ICV verified (RFC 4303 §3.4.3). A disabled window
// accepts everything and records nothing.
func (w *Window) Update(seq uint64) error {
	if err := w.Check(seq); err != nil {
		return err
	}
	if w.size == 0 {
		return nil
	}
	if seq > w.top {
		// Clear the blocks that the window slides onto (RFC 6479 §2).
		cur, next := w.top>>blockLog, seq>>blockLog
		if next-cur > w.mask {
			clear(w.blocks)
		} else {
			for b := cur + 1; b <= next; b++ {
				w.blocks[b&w.mask] = 0
			}
		}
		w.top = seq
	}
	w.blocks[(seq>>blockLog)&w.mask] |= 1 << (seq & (blockBits - 1))
	return nil
}

// InferHigh returns the full 64-bit sequence number of a packet whose low 32
// bits lo came on the wire, for an SA with Extended Sequence Numbers: the
// receiver never sees seq_hi and guesses it from its window (RFC 4303
// Appendix A2.2, the kernel's xfrm_replay_seqhi). With the window's highest
// sequence number Th‖Tl and bottom Bl = Tl − size + 1 (mod 2^32):
//
//   - case A, the window lies inside one 2^32 subspace (Tl ≥ size − 1):
//     lo ≥ Bl belongs to Th, lo < Bl to Th + 1 (the sender wrapped);
//   - case B, the window spans two subspaces: lo < Bl belongs to Th,
//     lo ≥ Bl to Th − 1 (a late packet from before the wrap).
//
// At Th = 0 case B has no earlier subspace and returns Th, where the kernel
// would compute seq_hi 0xffffffff and fail the ICV. A wrong guess is never
// accepted: seq_hi is part of the AAD, so the ICV check fails (the kernel
// then reports an integrity failure, not a replay). A disabled window has no
// state to infer from and returns lo in Th's subspace.
func (w *Window) InferHigh(lo uint32) uint64 {
	th, tl := uint32(w.top>>32), uint32(w.top)
	if w.size == 0 {
		return uint64(th)<<32 | uint64(lo)
	}
	size := uint32(w.size) // MaxSize < 2^32
	bottom := tl - size + 1
	if tl >= size-1 {
		if lo < bottom {
			th++
		}
	} else if lo >= bottom && th > 0 {
		th--
	}
	return uint64(th)<<32 | uint64(lo)
}
