// Package blocks decides which host owns which address block of the cluster
// CIDR, without a central server (issue 3, "Address blocks"). It is pure and
// deterministic: it does no network I/O and reads no clock (callers pass
// now). Its only I/O is Store, the one file that keeps a host's claim across
// restarts. Gossip (publishing claims, tracking membership) and routing are
// the callers' business.
//
// # The rule
//
// The cluster CIDR (default 10.42.0.0/16) is split into equal blocks (default
// /24) by Blocks. Every host publishes its claim: the block and Since, the
// time it first claimed it, by its own clock, kept on disk by Store. Any host
// holding the same set of claims resolves them the same way (Owners):
//
//  1. static prefixes (node.prefixes in the configuration) always win, and a
//     block claim that overlaps one in any way loses;
//  2. otherwise the claim with the earliest Since wins;
//  3. equal Since values go to the lexicographically smallest node name.
//
// The order is total, so there are no ties left and the result does not
// depend on the order in which gossip delivered the claims.
//
// Whenever its view of the membership changes, a host runs Decide: it keeps
// its block if Owners of its view gives the block to it, and otherwise picks a
// free block with Choose and claims it with Since = now. Choose starts at a
// block derived from a hash of the node name and probes with a stride
// derived from it too, so hosts that start together mostly try different
// blocks instead of racing for the first one, and losers of a collision do
// not all move to the same next block. The claims of dead hosts stay in the view and keep their blocks
// (a dead host is expected back); only hosts that left release theirs, and
// callers drop their claims. Owners ignores liveness; Routes, the subset of
// Owners with a live owner, is what gets routed.
//
// # How this meets the requirements
//
// "A claim that loses a conflict is resolved the same way on every host":
// Owners is a function of the set of claims alone. Two hosts whose views hold
// the same claims route every block to the same owner.
//
// "Two hosts never end up routing the same block, even when many start at
// once": views differ only while gossip spreads, so two hosts may briefly
// both hold one block (each unaware of the other). Once every host sees every
// claim, each contested block has exactly one winner, the same everywhere,
// and every other claimant moves. A winner is never challenged again: movers
// pick only blocks that no claim in their (now complete) view touches, so no
// new claim lands on a winner's block, whatever the clocks say. Every round
// after views agree therefore settles at least one more host (each contested
// block yields a winner), and claims converge to distinct blocks, typically
// within a round or two once gossip has converged (more when nearly every
// block is taken and the losers compete for the few free ones). Hosts that
// start at the same instant claim with equal Since values; the name breaks
// those ties. The simulation in sim_test.go runs 10 hosts starting at the same
// instant with partial, stale views and checks the end state over 200 seeds
// per scenario.
//
// Callers add two rules this package does not see (package agent): a new
// block is claimed only by a host that reaches more than half of the block
// holders it knows, so that two sides of a partition never claim the same
// block; and a fresh claim is handed out only after a settle time, so that
// a conflict between hosts that claimed together is settled before any
// address of the block is used.
//
// "A host keeps its block across restarts (state on disk)": Store persists
// the claim with its Since. A returning host presents its old Since, which is
// older than any claim made on its block while it was away, so it wins the
// block back and the newcomer moves.
//
// "A static prefixes setting still works and wins": rule 1. Static prefixes
// that overlap each other are kept as configured (longest-prefix match in the
// forwarding table splits the traffic); the very same prefix configured on
// two nodes goes to the earliest Since, then the smallest name.
//
// # Limits
//
// Since is compared, not checked here: a host whose clock runs far behind
// claims with old Since values and so wins conflicts over blocks it did not
// know were taken, moving their holders (it never takes a block it can see is
// held). The outcome is still the same on every host. The daemon (package
// agent) checks claims before they reach Owners: blocks outside the CIDR or
// of the wrong size, implausible Since values (before 2024 or in the future)
// and static prefixes overlapping the cluster CIDR are refused, so rule 1
// only ever meets statics outside the CIDR or a configured peer's. Choose does
// not reserve any block (not even the CIDR's first one); keep addresses that
// must not be handed out outside the cluster CIDR.
package blocks
