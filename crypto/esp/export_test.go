package esp

// Hooks for tests that must reproduce the kernel's bytes: the IV mask and
// the next sequence number of an OutSA, and the replay window's starting
// point of an InSA (the kernel's replay-seq/replay-seq-hi).

func SetIVMask(s *OutSA, mask uint64) { s.ivMask = mask }

func IVMask(s *OutSA) uint64 { return s.ivMask }

// SetNextSeq makes next the sequence number of the following Seal.
func SetNextSeq(s *OutSA, next uint64) { s.seq.Store(next - 1) }

// ResetReplay empties the window and sets its highest sequence number.
func ResetReplay(s *InSA, top uint64) {
	s.mu.Lock()
	s.window.Reset(top)
	s.mu.Unlock()
}
