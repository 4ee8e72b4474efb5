package metrics_test

import (
	"bytes"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/drovernet/drover/internal/metrics"
	"github.com/drovernet/drover/router"
)

// status is a Status with every field Write reads set, and peer names that
// need escaping: quote, backslash, newline, tab (not escaped by the
// format, refused by it when escaped as Go's %q does), and invalid UTF-8.
func status() router.Status {
	return router.Status{
		Drops:     map[string]uint64{"no_route": 3, "auth": 1, "replay": 0},
		TxPackets: 10, TxBytes: 1000, RxPackets: 20, RxBytes: 2000,
		ICMPSent: 1, Keepalives: 2, NonESP: 3, ARPReplies: 4,
		ForwardFilter: &router.ForwardFilterStatus{Table: "inet drover_filter", DropPackets: 5, DropBytes: 500},
		Stranded:      []router.StrandedAddr{{IP: "10.42.1.5"}, {IP: "10.42.1.6"}},
		PolicyDrops: []router.PolicyDrop{
			{Namespace: "x", Policy: "deny", Direction: "ingress", Packets: 6},
			{Namespace: "x", Policy: "deny", Direction: "egress", Packets: 2},
		},
		GuardDrops: map[string]uint64{"drop_mac": 3, "drop_arp": 1},
		Peers: []router.PeerStatus{
			{Name: "h2", TxPackets: 7, RxPackets: 8},
			{Name: `h"3\x`, TxPackets: 9, RxPackets: 10},
			{Name: "h\n4\t", TxPackets: 11, RxPackets: 12},
			{Name: "caf\xff", TxPackets: 13, RxPackets: 14},
		},
	}
}

func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Prometheus' text parser refused the metrics: %v\n%s", err, text)
	}
	return fams
}

// The text parses with Prometheus' own parser, every family has its HELP
// and TYPE once and the right type, and every value and label comes back.
func TestWriteParses(t *testing.T) {
	var b bytes.Buffer
	if err := metrics.Write(&b, status()); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	fams := parse(t, text)
	want := map[string]dto.MetricType{
		"drover_drops_total":                     dto.MetricType_COUNTER,
		"drover_tx_packets_total":                dto.MetricType_COUNTER,
		"drover_tx_bytes_total":                  dto.MetricType_COUNTER,
		"drover_rx_packets_total":                dto.MetricType_COUNTER,
		"drover_rx_bytes_total":                  dto.MetricType_COUNTER,
		"drover_icmp_sent_total":                 dto.MetricType_COUNTER,
		"drover_esp_keepalives_total":            dto.MetricType_COUNTER,
		"drover_esp_non_esp_total":               dto.MetricType_COUNTER,
		"drover_arp_replies_total":               dto.MetricType_COUNTER,
		"drover_forward_filter_drops_total":      dto.MetricType_COUNTER,
		"drover_forward_filter_drop_bytes_total": dto.MetricType_COUNTER,
		"drover_stranded_addresses":              dto.MetricType_GAUGE,
		"drover_peer_packets_total":              dto.MetricType_COUNTER,
		"drover_policy_drops_total":              dto.MetricType_COUNTER,
		"drover_guard_drops_total":               dto.MetricType_COUNTER,
	}
	for name, typ := range want {
		f, ok := fams[name]
		if !ok {
			t.Errorf("family %s: missing", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("family %s: got type %v, want %v", name, f.GetType(), typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("family %s: no HELP", name)
		}
		// The parser already refuses a second HELP or TYPE; a family
		// split in two would still parse, so count its TYPE lines too.
		if n := strings.Count(text, "# TYPE "+name+" "); n != 1 {
			t.Errorf("family %s: got %d TYPE lines, want 1", name, n)
		}
	}
	for name := range fams {
		if _, ok := want[name]; !ok {
			t.Errorf("family %s: not expected", name)
		}
	}

	value := func(name string, labels map[string]string) (float64, bool) {
		for _, m := range fams[name].GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			match := true
			for k, v := range labels {
				match = match && got[k] == v
			}
			if match {
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue(), true
				}
				return m.GetCounter().GetValue(), true
			}
		}
		return 0, false
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"drover_drops_total", map[string]string{"reason": "no_route"}, 3},
		{"drover_drops_total", map[string]string{"reason": "replay"}, 0},
		{"drover_tx_packets_total", nil, 10},
		{"drover_rx_bytes_total", nil, 2000},
		{"drover_arp_replies_total", nil, 4},
		{"drover_forward_filter_drop_bytes_total", nil, 500},
		{"drover_stranded_addresses", nil, 2},
		{"drover_peer_packets_total", map[string]string{"peer": "h2", "direction": "rx"}, 8},
		{"drover_policy_drops_total", map[string]string{"namespace": "x", "policy": "deny", "direction": "ingress"}, 6},
		{"drover_policy_drops_total", map[string]string{"namespace": "x", "policy": "deny", "direction": "egress"}, 2},
		{"drover_peer_packets_total", map[string]string{"peer": `h"3\x`, "direction": "tx"}, 9},
		{"drover_peer_packets_total", map[string]string{"peer": "h\n4\t", "direction": "rx"}, 12},
		{"drover_peer_packets_total", map[string]string{"peer": "caf\uFFFD", "direction": "tx"}, 13},
	} {
		got, ok := value(c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v: got %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

// The forward filter's families are there only when its counter was read.
func TestWriteForwardFilter(t *testing.T) {
	for _, c := range []struct {
		name string
		ff   *router.ForwardFilterStatus
		want bool
	}{
		{"off", nil, false},
		{"unreadable", &router.ForwardFilterStatus{Table: "inet drover_filter", Error: "no such table"}, false},
		{"read", &router.ForwardFilterStatus{Table: "inet drover_filter", DropPackets: 1}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := status()
			st.ForwardFilter = c.ff
			var b bytes.Buffer
			if err := metrics.Write(&b, st); err != nil {
				t.Fatal(err)
			}
			fams := parse(t, b.String())
			_, got := fams["drover_forward_filter_drops_total"]
			if got != c.want {
				t.Fatalf("drover_forward_filter_drops_total present: got %v, want %v", got, c.want)
			}
		})
	}
}

// A router with no peers yet still writes valid text (a family with HELP
// and TYPE and no sample is allowed).
func TestWriteNoPeers(t *testing.T) {
	var b bytes.Buffer
	if err := metrics.Write(&b, router.Status{Drops: map[string]uint64{"no_route": 0}}); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, b.String())
	if _, ok := fams["drover_tx_packets_total"]; !ok {
		t.Fatalf("drover_tx_packets_total missing:\n%s", b.String())
	}
}
