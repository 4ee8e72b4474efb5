// Package replay implements the ESP anti-replay window of RFC 4303 §3.4.3 as a
// ring of 64-bit bitmap blocks (RFC 6479), with the receiver side of Extended
// Sequence Numbers (RFC 4303 Appendix A2.2).
//
// It owns the window state of one inbound security association and nothing
// else: it does no I/O, reads no clock and takes no locks. A Window is not safe
// for concurrent use; the caller (crypto/esp) serialises access.
//
// The semantics follow the Linux kernel (xfrm, checked against Linux 6.1, see
// shared/interop/README.md), so a drover receiver drops exactly what a kernel
// receiver with the same replay-window would drop:
//
//   - a sequence number above the highest one seen is accepted, however far
//     ahead (the window slides);
//   - an unseen sequence number seq with highest − seq < size is accepted;
//   - a duplicate is ErrReplay (kernel SA counter "replay");
//   - anything older than the window is ErrStale (kernel counter
//     "replay-window"), and so is sequence number 0, which RFC 4303 §3.3.3
//     never sends (the counter starts at 1);
//   - size 0 disables anti-replay entirely: everything, including duplicates
//     and 0, is accepted (kernel replay-window 0).
//
// The window is exactly size packets wide, as in the kernel; only its storage
// is rounded up (to whole 64-bit blocks, plus one spare block so the ring can
// slide by clearing whole blocks, to a power of two).
//
// Check is the cheap test done before decryption and changes nothing; Update
// marks a sequence number as received and must only be called once the ICV
// has verified: the kernel does not consume a sequence number whose packet
// failed authentication, so a forged packet cannot burn a genuine one.
package replay
