// Package esp seals and opens ESP packets (RFC 4303 tunnel mode) with the
// AEADs of RFC 4106 (AES-GCM-128/256) and RFC 7634 (ChaCha20-Poly1305), as
// carried in UDP by RFC 3948. It does no I/O and reads no clock: callers own
// buffers, sockets, time and key management. The only outside input is
// crypto/rand, read once per OutSA for the IV mask.
//
// The bytes are those of the Linux kernel's xfrm/esp4 (confirmed against
// Linux 6.1 in shared/interop; the vectors in testdata/ are kernel captures):
//
//	UDP payload = SPI(4) | seq_lo(4) | IV(8) | AEAD(inner | pad | pad_len | next_header) | ICV(16)
//	key material = key ‖ salt(4)          (salt last, as ip xfrm state takes it)
//	nonce = salt ‖ IV                     (RFC 4106 §4, RFC 7634 §2)
//	AAD   = SPI ‖ seq_lo                  (8 bytes; the IV is not authenticated data)
//	AAD   = SPI ‖ seq_hi ‖ seq_lo         (12 bytes, with ESN; seq_hi is never sent)
//	IV    = (seq_hi‖seq_lo) XOR a random 64-bit mask fixed per SA (the kernel's seqiv)
//	pad   = 1, 2, 3: the least that makes len(inner)+2 a multiple of 4
//	next header = 4 (IPv4 inner) or 41 (IPv6 inner)
//
// OutSA.Seal works in place: the caller leaves Headroom bytes in front of the
// inner packet and Tailroom bytes of capacity behind it, and gets back the
// UDP payload. InSA.Open decrypts in place and returns the inner packet as a
// sub-slice of its input. Neither allocates; the AEAD is built once per SA.
//
// Both are safe for concurrent use. OutSA claims sequence numbers atomically
// (starting at 1, never reused: without ESN Seal fails with ErrSeqExhausted
// after 0xffffffff; nothing rekeys here, that is the caller's job). InSA keeps
// its anti-replay window (package crypto/replay) behind a mutex held only for
// the window's Check before decryption and Update after it, so a packet whose
// ICV fails never consumes its sequence number (RFC 4303 §3.4.3, and what the
// kernel does).
//
// Sealing and opening return sentinel errors (ErrShort, ErrSPI, ErrAuth,
// ErrReplay, ErrStale, ErrPadding, ErrNextHeader, ErrSeqExhausted, ErrBuffer)
// so that each can be counted as a drop reason without allocating. Classify
// and PeekSPI sort datagrams arriving on the ESP-in-UDP port (RFC 3948
// §2.2/§2.3) before any SA is involved.
package esp
