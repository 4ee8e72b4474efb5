// Package enforce turns a policy.World into what one host enforces and
// writes it to nftables: drover's own table (inet drover_policy), whose
// forward-hook chain checks egress for flows leaving this host's pods and
// ingress for flows reaching them, after conntrack has let replies of
// allowed flows through.
//
// The per-packet cost does not grow with pods or policies: a flow's first
// packet costs a hash lookup (is the pod local?), a hash lookup of the
// peer's identity and two concatenated-range set lookups (pipapo);
// established flows stop at the conntrack check. Pods with the same
// namespace, labels and named ports share an identity, so sets grow with
// local pods x peer identities, not with pairs of pods.
//
// Compile is pure (tested without root, and against policy.Evaluate);
// Enforcer.Apply writes a Ruleset in one nftables transaction, changing
// only the elements that differ from what it wrote before.
//
// The package owns table inet drover_policy and nothing else: not the
// forward filter of package firewall (table inet drover_filter), not the
// CNI plugin's NAT table.
package enforce
