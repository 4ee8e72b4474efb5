// Package policy is drover's network policy model: Kubernetes
// NetworkPolicy (networking.k8s.io/v1) with its whole semantics — pods
// selected per namespace, policyTypes and their defaults, peers by pod and
// namespace selectors or ipBlock with except, ports by number, name or
// range, TCP, UDP and SCTP, the union of all policies selecting a pod — and
// the same objects read from a file off Kubernetes.
//
// Compile validates a NetworkPolicy (errors name the field) and parses it
// into a Policy; a World is an immutable snapshot of policies, namespaces
// and pods; World.Evaluate decides a flow and says which policy and rule
// allowed it or which policies isolate the pod that denied it — what
// `drover policy explain` prints and what the enforcement must agree with.
//
// The package does no I/O and touches no kernel state: the sources (the
// API server, a file, the CNI plugin's pod records) fill a World, and
// package policy/nft turns one into nftables sets.
package policy
