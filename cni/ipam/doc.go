// Package ipam hands out container addresses from one host's block, on disk,
// for the drover CNI plugin.
//
// A Store is a directory (by default /var/lib/cni/drover/<network>) that
// holds one file per reserved address, named by the address ("10.42.1.5")
// and holding its owner as JSON ({"containerID":…,"ifname":…}). The directory
// is the whole truth: there is no index, and the daemon may read it to learn
// the host's local containers.
//
// Guarantees, and how they are kept:
//
//   - Concurrent plugins never hand out one address twice: every mutation
//     holds an exclusive flock(2) on the file "lock" in the directory, and a
//     reservation is created with link(2), which fails rather than replace an
//     existing file.
//   - A crash at any point never hands an address out twice: a reservation
//     is written to a temporary file, fsynced, linked into place and the
//     directory fsynced before Allocate returns, so the address is durable
//     before the caller configures anything with it (write-ahead). A crash
//     before the link leaves only a temporary file, removed by the next
//     mutation (it holds the lock, so no writer can be mid-way); a crash
//     after it leaves a reservation that stays until DEL or GC releases it.
//     The kernel drops a dead process's flock, so a crash never wedges the
//     store.
//   - A reservation file is never seen half-written: link publishes a
//     complete, synced file.
//
// Allocation is round-robin from the address after the last one handed out
// (kept in "last_reserved_ip", a hint that needs no fsync), so a freed
// address is reused as late as possible and stale ARP entries elsewhere have
// time to expire.
//
// The package owns the directory and nothing else: it configures no
// interfaces and talks to no daemon. IPv4 only, as the plugin.
package ipam
