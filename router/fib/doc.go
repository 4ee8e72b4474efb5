// Package fib is drover's forwarding table: longest-prefix match from an
// IPv4 or IPv6 destination address to a value (for the router, a peer).
//
// A Table is immutable once built. Gossip builds a new one with a Builder on
// every membership change and the router swaps it in whole through an
// atomic.Pointer, so the packet path does one atomic load per batch and
// lookups need no lock. The package is generic over the value and imports
// nothing of ours; it owns matching only, not what the values mean.
//
// Representation: the prefixes of a family always nest or are disjoint, so
// they cut the address space into at most 2n+1 intervals on which the
// longest match is constant. Build computes those intervals once; Lookup is
// a branch-free binary search over their sorted start addresses, one flat
// array per family. On the table sizes drover expects (tens to a few
// thousand prefixes) this beat both a path-compressed binary trie and
// per-prefix-length hash maps: it does not depend on how many distinct
// prefix lengths are present, chases no pointers and never allocates
// (numbers in bench_test.go).
//
// IPv4 and IPv6 are separate: an IPv4 route never matches an IPv6
// address or the reverse. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
// looked up as the IPv4 address they carry, so prefixes inside
// ::ffff:0:0/96 could never match and Insert rejects them.
package fib
