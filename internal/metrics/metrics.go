package metrics

import (
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/drovernet/drover/router"
)

// ContentType is the media type of what Write writes: the text format,
// version 0.0.4, as Prometheus asks for it (expfmt's FmtText).
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Write writes st as Prometheus text to w. The families, in order:
//
//	drover_drops_total{reason}                counter, every reason (zero too)
//	drover_tx_packets_total ... _non_esp_total counter, one sample each
//	drover_arp_replies_total                  counter
//	drover_forward_filter_drops_total         counter, when the filter is on and readable
//	drover_forward_filter_drop_bytes_total    counter, likewise
//	drover_stranded_addresses                 gauge
//	drover_peer_packets_total{peer,direction} counter, per peer, tx and rx
//	drover_policy_drops_total{namespace,policy,direction} counter, per policy and direction it isolates
//
// The text is built whole and written with one Write, so a failed client
// never sees half a family.
func Write(w io.Writer, st router.Status) error {
	var b strings.Builder
	family(&b, "drover_drops_total", "counter", "Packets not delivered, by reason.")
	reasons := make([]string, 0, len(st.Drops))
	for k := range st.Drops {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		sample(&b, "drover_drops_total", st.Drops[k], "reason", k)
	}
	for _, c := range []struct {
		name, help string
		v          uint64
	}{
		{"drover_tx_packets_total", "Packets sent to peers (TUN to underlay).", st.TxPackets},
		{"drover_tx_bytes_total", "UDP payload bytes sent to peers.", st.TxBytes},
		{"drover_rx_packets_total", "Packets received from peers and written to the TUN.", st.RxPackets},
		{"drover_rx_bytes_total", "Inner bytes written to the TUN.", st.RxBytes},
		{"drover_icmp_sent_total", "ICMP too-big errors sent.", st.ICMPSent},
		{"drover_esp_keepalives_total", "RFC 3948 NAT keepalives received.", st.Keepalives},
		{"drover_esp_non_esp_total", "Non-ESP (IKE) datagrams received on the ESP port.", st.NonESP},
		{"drover_arp_replies_total", "ARP replies sent on the container bridge for remote addresses.", st.ARPReplies},
	} {
		family(&b, c.name, "counter", c.help)
		sample(&b, c.name, c.v)
	}
	if ff := st.ForwardFilter; ff != nil && ff.Error == "" {
		family(&b, "drover_forward_filter_drops_total", "counter", "Packets to containers the forward filter dropped (not from the TUN or the bridge, not part of an accepted connection).")
		sample(&b, "drover_forward_filter_drops_total", ff.DropPackets)
		family(&b, "drover_forward_filter_drop_bytes_total", "counter", "Bytes of the packets the forward filter dropped.")
		sample(&b, "drover_forward_filter_drop_bytes_total", ff.DropBytes)
	}
	family(&b, "drover_stranded_addresses", "gauge", "Containers of this host whose addresses lie in a block it lost to another host (recreate them).")
	sample(&b, "drover_stranded_addresses", uint64(len(st.Stranded)))
	family(&b, "drover_peer_packets_total", "counter", "Packets per peer and direction.")
	for _, p := range st.Peers {
		sample(&b, "drover_peer_packets_total", p.TxPackets, "peer", p.Name, "direction", "tx")
		sample(&b, "drover_peer_packets_total", p.RxPackets, "peer", p.Name, "direction", "rx")
	}
	if len(st.PolicyDrops) > 0 {
		family(&b, "drover_policy_drops_total", "counter", "Packets network policy denied on this host, by the policy isolating the pod (a pod isolated by several counts under each).")
		for _, d := range st.PolicyDrops {
			sample(&b, "drover_policy_drops_total", d.Packets, "namespace", d.Namespace, "policy", d.Policy, "direction", d.Direction)
		}
	}
	if len(st.GuardDrops) > 0 {
		family(&b, "drover_guard_drops_total", "counter", "Frames the layer-2 guard dropped on container ports, by reason (l2guard: another MAC or address, forged ARP, DHCP server, router advertisement, IPv6, other EtherTypes, to the metadata address).")
		for _, r := range slices.Sorted(maps.Keys(st.GuardDrops)) {
			sample(&b, "drover_guard_drops_total", st.GuardDrops[r], "reason", strings.TrimPrefix(r, "drop_"))
		}
	}
	if bs := st.BGP; bs != nil {
		family(&b, "drover_bgp_announced_prefixes", "gauge", "Prefixes this host announces by BGP.")
		sample(&b, "drover_bgp_announced_prefixes", uint64(len(bs.Announced)))
		family(&b, "drover_bgp_session_established", "gauge", "1 when the BGP session with the neighbour is established, else 0.")
		for _, n := range bs.Neighbors {
			up := uint64(0)
			if n.State == "established" {
				up = 1
			}
			sample(&b, "drover_bgp_session_established", up, "neighbor", n.Address)
		}
		family(&b, "drover_bgp_prefixes", "gauge", "Prefixes sent to and received from each BGP neighbour.")
		for _, n := range bs.Neighbors {
			sample(&b, "drover_bgp_prefixes", n.PrefixesSent, "neighbor", n.Address, "direction", "sent")
			sample(&b, "drover_bgp_prefixes", n.PrefixesReceived, "neighbor", n.Address, "direction", "received")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// family writes the HELP and TYPE lines of one family. The help texts are
// ours: no backslash or newline to escape.
func family(b *strings.Builder, name, typ, help string) {
	b.WriteString("# HELP ")
	b.WriteString(name)
	b.WriteByte(' ')
	b.WriteString(help)
	b.WriteString("\n# TYPE ")
	b.WriteString(name)
	b.WriteByte(' ')
	b.WriteString(typ)
	b.WriteByte('\n')
}

// sample writes one sample line; labels are name, value pairs.
func sample(b *strings.Builder, name string, v uint64, labels ...string) {
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(labels[i])
			b.WriteString(`="`)
			b.WriteString(escape(labels[i+1]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(v, 10))
	b.WriteByte('\n')
}

// labelEscaper escapes what the text format escapes in a label value, and
// nothing else: Go's %q would also write \t or \u00e9, which Prometheus'
// parser refuses as invalid escape sequences.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escape(v string) string {
	return labelEscaper.Replace(strings.ToValidUTF8(v, "\uFFFD"))
}
