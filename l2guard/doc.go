// Package l2guard owns drover's layer-2 guard: an nftables table of the
// bridge family (the modern ebtables), table bridge drover_guard, that binds
// every container port of a drover bridge to the container's own MAC and
// IPv4 address, and keeps the node-local metadata address off the wire.
//
//	table bridge drover_guard {
//	  counter drop_mac, drop_arp, drop_ip, drop_dhcp, drop_ra, drop_ipv6, drop_other, drop_metadata
//	  set metadata { type ipv4_addr }              # 169.254.169.250 by default
//	  map ports { type ifname : verdict }          # host end of a veth : jump port_<ifname>
//	  chain prerouting { type filter hook prerouting priority -200; policy accept
//	    iifname vmap @ports                        # a container port: its chain decides
//	    arp daddr ip @metadata drop                # anything else (the uplink): never to the
//	    ip daddr @metadata drop }                  #   metadata address
//	  chain forward { type filter hook forward priority filter; policy accept
//	    arp daddr ip @metadata drop                # the metadata address is the host's:
//	    ip daddr @metadata drop }                  #   never bridged to any port
//	  chain port_<ifname> {
//	    ip, ether saddr MAC, ip saddr IP, not udp: accept   # the fast path
//	    ether saddr != MAC drop                    # drop_mac
//	    arp: not Ethernet/IPv4 drop                # drop_arp
//	    arp: sha . spa != MAC . IP drop            # drop_arp: replies only for its own address
//	    arp accept
//	    ip: udp sport 67 drop                      # drop_dhcp: no DHCP server in a container
//	    ip saddr != IP drop                        # drop_ip
//	    ip accept
//	    ip6: icmpv6 router advertisement drop      # drop_ra
//	    ip6 drop                                   # drop_ipv6: drover's networks are IPv4
//	    drop }                                     # drop_other: VLAN tags, LLDP, anything else
//	}
//
// Threat model. A container is untrusted: it can send any frame from its
// interface. Without the guard it could answer ARP for the LAN's gateway or
// another container (and so receive their traffic), send from another
// container's address (and so pass network policy as that container, or
// read that container's metadata record), offer DHCP leases or advertise
// itself as an IPv6 router to every device on the LAN. With it, every frame
// a container port delivers carries the port's MAC, and every IPv4 packet
// and ARP message the container's own address: the source address
// identifies the container, which is what network policy and the metadata
// service rely on. Nothing on the LAN (frames entering from a port the
// guard does not know, such as the uplink) reaches the metadata address,
// and no frame to it is ever bridged, so a container's ARP for it is
// answered by the host alone and never seen on the LAN.
//
// Who writes it. The CNI plugin: ADD adds a port's chain and map element in
// one transaction (replacing what a crashed ADD left), DEL removes them,
// GC removes the ports of veths that no longer exist, and CHECK compares the
// port's chain and the base chains rule by rule with what they must be, so
// a rule someone deleted or changed is reported. The table itself is made
// once, atomically (NFT_MSG_NEWTABLE with NLM_F_EXCL in the same
// transaction as its chains): concurrent ADDs never duplicate a base rule.
// The daemon only reads the counters (drover status, /metrics).
package l2guard
