// Package firewall owns drover's forward filter: an nftables table of its
// own (table inet drover_filter) whose forward-hook chain lets traffic
// addressed to containers through only when it came out of the tunnel (the
// TUN device), from the container bridge, or belongs to a connection the
// host accepted (conntrack established/related, or DNAT such as the portmap
// plugin's). Everything else addressed to containers is dropped and
// counted in a named counter the daemon reads.
//
// Without it a host with ip_forward on (the CNI plugin turns it on) routes
// cleartext from any underlay neighbour straight onto the container bridge,
// around ESP, the replay window and the router's source checks.
//
// Build turns a Spec into the table, chains, counter and rules without
// touching the kernel, so the rule logic is tested without root; Install
// applies them in one nftables transaction that replaces whatever an
// earlier (crashed) daemon left, and Remove deletes the table.
//
// The package does not own the CNI plugin's NAT table (table ip drover, in
// package cni), the host's INPUT path (traffic to the host's own addresses,
// the bridge's and the TUN's included) nor any other table: it never reads
// or changes them. docs/security.md describes what the filter allows.
package firewall
