// Package gossip will own cluster membership (hashicorp/memberlist): who is in
// the cluster, each node's underlay address, prefixes, keys and capabilities,
// turned into forwarding-table updates. Until then drover peers are static
// (see cmd/drover/config).
package gossip
