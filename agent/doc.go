// Package agent is the daemon's control plane in cluster mode. It turns what
// the membership says (members, their blocks, static prefixes and public
// keys) into the router's peers, the kernel's routes through the TUN, and
// this host's own block and addresses; it rotates the ephemeral key and
// derives every pair's SAs (docs/keys.md).
//
// Nothing a member publishes is believed unchecked (docs/security.md):
//
//   - a member's identity key is pinned to its name on first sight
//     (Pins, state_dir/identities.json); a different key under a known name
//     is refused whole, and shown;
//   - a block must lie inside the cluster CIDR with the cluster's block
//     length, and its BlockSince must be plausible;
//   - a static prefix must not be broader than /8 (/16 for IPv6), and must
//     not overlap the underlay's subnets or any member's underlay address,
//     this host's own prefixes or block, the configured static peers, or
//     another member's block.
//
// Refused claims are logged (rate-limited) and listed in the view with their
// reason. Routes are added without replacing (Kernel.AddRoute): a prefix
// that something other than drover already routes is left alone.
//
// Key state follows one rule: an SA, inbound or outbound, lives until the
// ephemeral private key of ours that derived it is erased. Then the
// combination cannot be derived again, so no outbound SA ever restarts at
// sequence 1 under a key it used before, and no inbound SA comes back with
// an empty replay window.
//
// The agent owns no I/O of its own: membership, router, kernel and clock are
// interfaces (Membership, Router, Kernel, Clock), so its logic is unit-tested
// with in-memory fakes and explicit times. cmd/drover wires the real ones.
// All state is owned by the goroutine that runs Run (or, in tests, the
// caller of Step and Rotate); Snapshot may be called from anywhere.
package agent
