package replay

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// step is one received sequence number and the verdict Update must give.
type step struct {
	seq  uint64
	want error
}

func run(t *testing.T, w *Window, steps []step) {
	t.Helper()
	for i, s := range steps {
		chk := w.Check(s.seq)
		if !errors.Is(chk, s.want) {
			t.Fatalf("step %d: Check(%d) = %v, want %v", i, s.seq, chk, s.want)
		}
		if got := w.Update(s.seq); !errors.Is(got, s.want) {
			t.Fatalf("step %d: Update(%d) = %v, want %v", i, s.seq, got, s.want)
		}
	}
}

func mustNew(t testing.TB, size int) *Window {
	t.Helper()
	w, err := New(size)
	if err != nil {
		t.Fatalf("New(%d): %v", size, err)
	}
	return w
}

// TestKernelCases ports the anti-replay rows of shared/interop/README.md,
// each confirmed against Linux 6.1 xfrm, plus the RFC 4303 §3.4.3 basics.
func TestKernelCases(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		steps []step
	}{
		{"W32 after 100: 69 in, 68 stale", 32, []step{{100, nil}, {69, nil}, {68, ErrStale}}},
		{"W64 after 100: 68 in", 64, []step{{100, nil}, {68, nil}, {37, nil}, {36, ErrStale}}},
		{"W1000 bitmap state exact edge", 1000, []step{{5000, nil}, {4001, nil}, {4000, ErrStale}}},
		{"duplicate", 32, []step{{1, nil}, {2, nil}, {2, ErrReplay}, {1, ErrReplay}}},
		{"duplicate of highest", 1024, []step{{7, nil}, {7, ErrReplay}}},
		{"reorder inside window", 32, []step{{10, nil}, {8, nil}, {9, nil}, {5, nil}, {8, ErrReplay}, {11, nil}, {6, nil}}},
		{"stale after a jump", 32, []step{{1, nil}, {2, nil}, {1000, nil}, {3, ErrStale}, {968, ErrStale}, {969, nil}, {969, ErrReplay}, {970, nil}}},
		{"seq 0 rejected", 32, []step{{0, ErrStale}, {1, nil}, {0, ErrStale}}},
		{"first packet anywhere", 32, []step{{500, nil}, {499, nil}, {469, nil}, {468, ErrStale}}},
		{"W0 accepts all", 0, []step{{0, nil}, {100, nil}, {100, nil}, {1, nil}, {0, nil}, {100, nil}}},
		{"W1 only top+", 1, []step{{5, nil}, {4, ErrStale}, {5, ErrReplay}, {6, nil}}},
		{"jump over whole ring clears old bits", 64, []step{{1, nil}, {2, nil}, {1 << 20, nil}, {1<<20 - 1, nil}, {1<<20 - 63, nil}, {1<<20 - 64, ErrStale}, {1 << 20, ErrReplay}}},
		{"block boundary", 64, []step{{63, nil}, {64, nil}, {127, nil}, {64, ErrReplay}, {65, nil}, {63, ErrStale}, {128, nil}, {64, ErrStale}, {65, ErrReplay}, {66, nil}}},
		{"64-bit (ESN) numbers", 1024, []step{{1<<32 - 1, nil}, {1 << 32, nil}, {1<<32 - 1, ErrReplay}, {1<<32 - 2, nil}, {1<<32 + 5, nil}, {1<<32 - 1018, nil}, {1<<32 - 1019, ErrStale}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run(t, mustNew(t, tc.size), tc.steps)
		})
	}
}

// TestEveryOffset checks the exact edge for window sizes around block
// boundaries: after top, top−(size−1) is accepted and top−size is stale.
func TestEveryOffset(t *testing.T) {
	for _, size := range []int{1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 1024, 1025, 4096, MaxSize} {
		for _, top := range []uint64{uint64(size) + 1, 3*uint64(size) + 17, 1<<32 + 3} {
			w := mustNew(t, size)
			if err := w.Update(top); err != nil {
				t.Fatalf("size %d: Update(%d) = %v", size, top, err)
			}
			for d := uint64(1); d < uint64(size); d++ {
				if err := w.Update(top - d); err != nil {
					t.Fatalf("size %d top %d: Update(top-%d) = %v, want nil", size, top, d, err)
				}
			}
			if err := w.Check(top - uint64(size)); !errors.Is(err, ErrStale) {
				t.Fatalf("size %d top %d: Check(top-size) = %v, want ErrStale", size, top, err)
			}
			for d := uint64(0); d < uint64(size); d++ {
				if err := w.Check(top - d); !errors.Is(err, ErrReplay) {
					t.Fatalf("size %d top %d: Check(top-%d) = %v, want ErrReplay", size, top, d, err)
				}
			}
		}
	}
}

func TestInit(t *testing.T) {
	for _, size := range []int{-1, MaxSize + 1} {
		if _, err := New(size); err == nil {
			t.Errorf("New(%d): got nil error, want out of range", size)
		}
	}
	var zero Window
	for _, seq := range []uint64{0, 5, 5, 1} {
		if err := zero.Update(seq); err != nil {
			t.Errorf("zero Window Update(%d) = %v, want nil (disabled)", seq, err)
		}
	}
	w := mustNew(t, DefaultSize)
	if got := w.Size(); got != DefaultSize {
		t.Errorf("Size() = %d, want %d", got, DefaultSize)
	}
	if got := len(w.blocks); got != 32 {
		t.Errorf("blocks for 1024 = %d, want 32", got)
	}
	if err := w.Update(9); err != nil {
		t.Fatal(err)
	}
	w.Reset(1 << 32)
	if got := w.Top(); got != 1<<32 {
		t.Errorf("Top() after Reset = %#x, want 1<<32", got)
	}
	// Reset does not mark top as received (kernel initial state).
	if err := w.Check(1 << 32); err != nil {
		t.Errorf("Check(top) after Reset = %v, want nil", err)
	}
	if err := w.Check(1<<32 - 1); err != nil {
		t.Errorf("Check(top-1) after Reset = %v, want nil", err)
	}
}

// TestInferHigh ports the ESN rows of shared/interop/README.md (state hi 0 /
// lo 0xfffffff0) and RFC 4303 Appendix A2.2's two cases.
func TestInferHigh(t *testing.T) {
	tests := []struct {
		name string
		size int
		top  uint64
		lo   uint32
		want uint64
	}{
		{"kernel: same subspace", 32, 0xfffffff0, 0xfffffff8, 0xfffffff8},
		{"kernel: wrapped", 32, 0xfffffff0, 2, 1<<32 | 2},
		{"kernel: older across wrap", 32, 1<<32 | 2, 0xfffffffa, 0xfffffffa},
		{"kernel: older across wrap, W1024", 1024, 1<<32 | 2, 0xfffffffa, 0xfffffffa},
		{"A: inside window", 1024, 5<<32 | 5000, 4000, 5<<32 | 4000},
		{"A: at bottom", 1024, 5<<32 | 5000, 3977, 5<<32 | 3977},
		{"A: below bottom is next subspace", 1024, 5<<32 | 5000, 3976, 6<<32 | 3976},
		{"A: above top", 1024, 5<<32 | 5000, 0x80000000, 5<<32 | 0x80000000},
		{"B: low lo stays", 1024, 5<<32 | 10, 9, 5<<32 | 9},
		{"B: just below bottom stays", 1024, 5<<32 | 10, 0xfffffc0a, 5<<32 | 0xfffffc0a},
		{"B: bottom belongs to previous", 1024, 5<<32 | 10, 0xfffffc0b, 4<<32 | 0xfffffc0b},
		{"B: at hi 0 never underflows", 1024, 10, 0xffffffff, 0xffffffff},
		{"fresh SA", 1024, 0, 1, 1},
		{"primed at hi 1 (ESN vectors)", 1024, 1 << 32, 1, 1<<32 | 1},
		{"tl = size-1 is case A, bottom 0", 1024, 1023, 0, 0},
		{"tl = size is case A, bottom 1", 1024, 1024, 0, 1 << 32},
		{"disabled", 0, 7<<32 | 3, 9, 7<<32 | 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := mustNew(t, tc.size)
			w.Reset(tc.top)
			if got := w.InferHigh(tc.lo); got != tc.want {
				t.Fatalf("InferHigh(%#x) at top %#x = %#x, want %#x", tc.lo, tc.top, got, tc.want)
			}
		})
	}
}

// TestESNWrapSequence replays the kernel experiment: state hi 0 / lo
// 0xfffffff0, then 0xfffffff8, 2 (hi 1), 0xfffffffa (hi 0, older).
func TestESNWrapSequence(t *testing.T) {
	w := mustNew(t, 32)
	recv := func(lo uint32, wantSeq uint64, wantErr error) {
		t.Helper()
		seq := w.InferHigh(lo)
		if seq != wantSeq {
			t.Fatalf("InferHigh(%#x) = %#x, want %#x", lo, seq, wantSeq)
		}
		if err := w.Update(seq); !errors.Is(err, wantErr) {
			t.Fatalf("Update(%#x) = %v, want %v", seq, err, wantErr)
		}
	}
	recv(0xfffffff0, 0xfffffff0, nil)
	recv(0xfffffff8, 0xfffffff8, nil)
	recv(2, 1<<32|2, nil)
	recv(0xfffffffa, 0xfffffffa, nil)
	recv(0xfffffff8, 0xfffffff8, ErrReplay)
	recv(0, 1<<32, nil)               // lo 0 is valid under ESN
	recv(0xffffffe3, 0xffffffe3, nil) // the window's bottom, still hi 0
	// One below the bottom is read as the next subspace, as the kernel does;
	// if the sender meant hi 0 the ICV fails and Update is never called.
	if got := w.InferHigh(0xffffffe2); got != 1<<32|0xffffffe2 {
		t.Fatalf("InferHigh(0xffffffe2) = %#x, want 1<<32|0xffffffe2", got)
	}
}

// ref is the slow reference: a set of every sequence number received.
type ref struct {
	size uint64
	top  uint64
	seen map[uint64]bool
}

func (r *ref) check(seq uint64) error {
	switch {
	case r.size == 0:
		return nil
	case seq == 0:
		return ErrStale
	case seq > r.top:
		return nil
	case r.top-seq >= r.size:
		return ErrStale
	case r.seen[seq]:
		return ErrReplay
	}
	return nil
}

func (r *ref) update(seq uint64) error {
	if err := r.check(seq); err != nil || r.size == 0 {
		return err
	}
	r.seen[seq] = true
	r.top = max(r.top, seq)
	return nil
}

// TestDifferential compares Window with the map-based reference on random
// traffic: in-order runs, reordering, duplicates, stale packets and jumps.
func TestDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 32, 64, 100, 1024, 4000} {
		for round := range 20 {
			w := mustNew(t, size)
			r := &ref{size: uint64(size), seen: map[uint64]bool{}}
			var base uint64
			if round%2 == 1 {
				base = 1<<32 - 3000 // cross the 32-bit boundary with 64-bit numbers
			}
			next := base
			for i := range 3000 {
				var seq uint64
				switch p := rng.IntN(100); {
				case p < 50:
					next++
					seq = next
				case p < 75: // reordered, near the top
					seq = back(next, rng.IntN(2*size+3))
				case p < 85: // duplicate of something recent
					seq = back(next, rng.IntN(8))
				case p < 95: // jump ahead
					next += uint64(rng.IntN(4 * (size + 64)))
					seq = next
				case p < 98:
					seq = 0
				default: // far in the past
					seq = uint64(rng.Int64N(int64(next + 1)))
				}
				if got, want := w.Check(seq), r.check(seq); got != want {
					t.Fatalf("size %d round %d step %d: Check(%d) = %v, want %v", size, round, i, seq, got, want)
				}
				if rng.IntN(10) == 0 {
					continue // ICV failed: Check only, no Update
				}
				if got, want := w.Update(seq), r.update(seq); got != want {
					t.Fatalf("size %d round %d step %d: Update(%d) = %v, want %v", size, round, i, seq, got, want)
				}
			}
		}
	}
}

// back returns next-d, or 0 where that would wrap below zero.
func back(next uint64, d int) uint64 {
	if uint64(d) > next {
		return 0
	}
	return next - uint64(d)
}

func TestNoAllocs(t *testing.T) {
	w := mustNew(t, DefaultSize)
	var seq uint64
	a := testing.AllocsPerRun(1000, func() {
		seq++
		_ = w.Check(seq)
		_ = w.Update(seq)
		_ = w.InferHigh(uint32(seq))
	})
	if a != 0 {
		t.Fatalf("Check+Update+InferHigh: %v allocs/op, want 0", a)
	}
}

func BenchmarkUpdateInOrder(b *testing.B) {
	w := mustNew(b, DefaultSize)
	var seq uint64
	b.ReportAllocs()
	for b.Loop() {
		seq++
		if w.Check(seq) == nil {
			_ = w.Update(seq)
		}
	}
}

func BenchmarkUpdateReordered(b *testing.B) {
	w := mustNew(b, DefaultSize)
	// A fixed pattern of small reorderings and a few duplicates.
	offs := []uint64{0, 3, 1, 2, 2, 7, 4, 6, 5, 5}
	var base, i uint64
	b.ReportAllocs()
	for b.Loop() {
		seq := base + offs[i%uint64(len(offs))]
		if i%uint64(len(offs)) == 0 {
			base += 8
		}
		i++
		if w.Check(seq) == nil {
			_ = w.Update(seq)
		}
	}
}
