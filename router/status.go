package router

// Status is a snapshot of the router for the control socket (`drover status
// -o json`, tests, `drover lab`). Field names are part of the JSON API:
// only add fields.
type Status struct {
	Node          string `json:"node"`
	Encapsulation string `json:"encapsulation"`
	Cipher        string `json:"cipher,omitempty"`
	TUN           string `json:"tun"`
	TUNMTU        int    `json:"tun_mtu"`
	UnderlayMTU   int    `json:"underlay_mtu"`
	Listen        string `json:"listen"`
	// Prefixes are this node's own container prefixes (its block).
	Prefixes []string `json:"prefixes"`
	// Addresses are the TUN device's own addresses.
	Addresses []string     `json:"addresses"`
	Peers     []PeerStatus `json:"peers"`
	// Drops counts packets the router could not deliver, by reason
	// (DropReason.String()). Every reason is present, zero or not.
	Drops map[string]uint64 `json:"drops"`
	// Egress and ingress totals: inner packets (and their bytes) moved
	// TUN→UDP and UDP→TUN; the sums of the per-peer counters.
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	// ICMP errors sent back into the TUN (too big for the tunnel).
	ICMPSent uint64 `json:"icmp_sent"`
	// Non-ESP traffic seen on the ESP port (RFC 3948).
	Keepalives uint64 `json:"keepalives"`
	NonESP     uint64 `json:"non_esp"`
	// ARP replies sent on the container bridge for remote addresses.
	ARPReplies uint64 `json:"arp_replies"`
	// ForwardFilter is the host's forward filter (package firewall). The
	// router knows nothing of it: the daemon's control layer fills it in.
	// Absent when the filter is off (firewall.forward: false).
	ForwardFilter *ForwardFilterStatus `json:"forward_filter,omitempty"`
	// BlockNote says why a cluster-mode host has no block yet (filled by
	// the control layer from the agent; the CNI plugin repeats it).
	BlockNote string `json:"block_note,omitempty"`
	// Stranded lists this host's containers whose addresses lie in a
	// block it no longer holds (lost to an earlier claim when two sides
	// of a cluster met): another host now hands those addresses out, so
	// these containers must be recreated (filled by the control layer).
	Stranded []StrandedAddr `json:"stranded,omitempty"`
	// PolicyDrops are network policy's drop counters, per policy and
	// direction it isolates (filled by the control layer).
	PolicyDrops []PolicyDrop `json:"policy_drops,omitempty"`
	// GuardDrops are the layer-2 guard's drop counters by reason
	// (package l2guard: drop_mac, drop_arp, ...), filled by the control
	// layer when the guard's table exists.
	GuardDrops map[string]uint64 `json:"guard_drops,omitempty"`
	// BGP is the BGP speaker (package bgp), filled by the control layer;
	// absent without a bgp section.
	BGP *BGPStatus `json:"bgp,omitempty"`
}

// BGPStatus is the BGP speaker: what it announces and its sessions.
type BGPStatus struct {
	AS        uint32              `json:"as"`
	RouterID  string              `json:"router_id"`
	Announced []string            `json:"announced"`
	Neighbors []BGPNeighborStatus `json:"neighbors"`
	// Error says why the sessions could not be listed.
	Error string `json:"error,omitempty"`
}

// BGPNeighborStatus is one BGP session.
type BGPNeighborStatus struct {
	Address string `json:"address"`
	AS      uint32 `json:"as"`
	// State is the session state (RFC 4271 §8.2.2): idle, connect,
	// active, opensent, openconfirm, established.
	State            string `json:"state"`
	UptimeSeconds    int64  `json:"uptime_seconds,omitempty"`
	PrefixesSent     uint64 `json:"prefixes_sent"`
	PrefixesReceived uint64 `json:"prefixes_received"`
	// LastError is the session's last error (a NOTIFICATION sent or
	// received, a reset), until it is established again.
	LastError string `json:"last_error,omitempty"`
}

// PolicyDrop is the packets one policy denied on this host in one
// direction.
type PolicyDrop struct {
	Namespace string `json:"namespace"`
	Policy    string `json:"policy"`
	Direction string `json:"direction"` // ingress or egress
	Packets   uint64 `json:"packets"`
}

// StrandedAddr is one stranded container address.
type StrandedAddr struct {
	IP          string `json:"ip"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
	Network     string `json:"network"`
}

// ForwardFilterStatus is the forward filter's table and what it dropped.
type ForwardFilterStatus struct {
	Table       string `json:"table"` // "inet drover_filter"
	DropPackets uint64 `json:"drop_packets"`
	DropBytes   uint64 `json:"drop_bytes"`
	// Error says why the counter could not be read (the table was
	// deleted by hand, say); the counts are then zero.
	Error string `json:"error,omitempty"`
}

// PeerStatus is one peer.
type PeerStatus struct {
	Name      string    `json:"name"`
	Underlay  string    `json:"underlay"`
	Prefixes  []string  `json:"prefixes"`
	TunnelMTU int       `json:"tunnel_mtu"`
	TxPackets uint64    `json:"tx_packets"`
	TxBytes   uint64    `json:"tx_bytes"`
	RxPackets uint64    `json:"rx_packets"`
	RxBytes   uint64    `json:"rx_bytes"`
	SAOut     *SAStatus `json:"sa_out,omitempty"`
	SAIn      *SAStatus `json:"sa_in,omitempty"`
}

// SAStatus is one ESP security association.
type SAStatus struct {
	SPI        uint32 `json:"spi"`
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`
	AgeSeconds int64  `json:"age_seconds"`
}
