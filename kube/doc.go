// Package kube is drover's Kubernetes datastore: cluster membership from
// Node objects instead of gossip, behind the same agent.Membership
// interface, so the agent's logic (blocks, pair keys, rotation, routes) is
// one and tested once.
//
// Each drover host publishes its facts — underlay address and port,
// encapsulations and ciphers, identity and ephemeral public keys, epoch,
// block — on its own Node as the annotation drover.network/node-info (the
// gossip meta encoding, base64), and reads every other Node's through an
// informer. A Node carrying the annotation is a member, alive while the
// Node exists; deleting the Node withdraws it everywhere. Blocks are the
// Nodes' spec.podCIDRs (ModeNode, the controller-manager allocates them)
// or claimed by drover as in gossip mode and recorded in the same
// annotation (ModeClaim).
//
// While the API server is away the informer's cache stays as it was: the
// agent keeps every peer and route and the data plane forwards on; the
// informer relists when the server returns, and our own info is published
// again until the server takes it.
//
// Threat model.
//
//   - An attacker on the underlay without the cluster key: as in gossip
//     mode, every pair key is derived from the cluster key (mounted from a
//     Secret) and both identity keys; annotations carry only public keys,
//     so reading Nodes gives nothing to forge ESP with. The Kubernetes API
//     is reached over its own TLS with the pod's service account.
//   - A member with the key but a bad or hostile config, or one whose
//     service account is used by an attacker: drover's ClusterRole may
//     patch any Node's annotations (RBAC cannot narrow a verb to the
//     caller's own Node). It cannot take another host's block in ModeNode:
//     blocks are read from spec.podCIDR, which only the controller-manager
//     sets and which is immutable once set. Overwriting another Node's
//     node-info with a different identity key is refused by every host
//     that pinned the old one (agent.Pins, as in gossip mode); a Node seen
//     first with a forged key is the residual risk, as it is for any
//     provider trusting the Node API. In ModeClaim a hostile member can
//     claim blocks as in gossip mode, with the same checks.
//   - A local unprivileged user on a node: nothing here listens; the
//     kubeconfig and the key are files readable by root only.
package kube
