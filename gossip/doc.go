// Package gossip is drover's cluster membership, built on
// github.com/hashicorp/memberlist (SWIM failure detection, gossip and
// push/pull anti-entropy). A host needs only the cluster key and one seed
// address: Start listens and publishes this node's NodeInfo, Join contacts
// the seeds, and Members lists every member with its state (alive, suspect,
// dead, left) and the NodeInfo it published — underlay address and port,
// prefixes, claimed block, X25519 public keys, encapsulations, ciphers, MAC
// and version. Changes signals every change to that list.
//
// Gossip is encrypted and authenticated with the cluster key (memberlist's
// keyring, AES-GCM), in and out: a host without the key cannot join, and
// nothing it sends changes any member's state. NodeInfo travels as
// memberlist node meta in a compact, versioned binary encoding (meta.go)
// whose decoder is strict and fuzzed.
//
// memberlist leaves some things to its user, and this package does them:
// it tells a member that left (Leave) from one that failed, keeps dead and
// left members listed after memberlist forgets them, reports this node's
// own suspicions, reconnects to failed members and seeds so that a
// partition heals, lets a restarted host's name move to a new address, and
// turns memberlist's log lines into rate-limited slog records.
//
// It does not decide what members mean for the data plane — routes, block
// claims (gossip/blocks), key derivation — which is the daemon's job
// (cmd/drover), and it reads no files but the key file (LoadKey).
package gossip
