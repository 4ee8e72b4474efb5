// Package aesgcm is AES-GCM (NIST SP 800-38D, the AEAD of RFC 4106 ESP) with
// the standard 12-byte nonce and 16-byte tag, made faster on amd64 CPUs that
// have VAES and VPCLMULQDQ.
//
// On such CPUs New returns this package's assembly: CTR mode with VAES on
// 256-bit registers, 16 blocks per loop iteration, and GHASH with VPCLMULQDQ
// over precomputed powers H^1..H^34 with one reduction per 16 blocks, the
// additional data (up to 16 bytes), the last bytes and the lengths block
// sharing the first or last reduction rather than having their own (the
// aggregated, bit-reflected method of Gueron and Kounavis, "Intel
// Carry-Less Multiplication Instruction and its Usage for Computing the GCM
// Mode"). Everywhere else (other CPUs, other GOARCH, the purego build tag)
// New returns the standard library's cipher.NewGCM(aes.NewCipher(key)).
// Either way the outputs are byte for byte those of the standard library.
//
// The package owns the cipher only: nonces, sequence numbers and ESP framing
// belong to crypto/esp.
package aesgcm
