package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/internal/metrics"
	"github.com/drovernet/drover/router"
)

// The filter protects the cluster CIDR (cluster mode) and every configured
// prefix, and trusts the TUN and the bridge by name.
func TestForwardSpec(t *testing.T) {
	tests := []struct {
		name, yaml   string
		tun, bridge  string
		wantPrefixes []string
	}{
		{"static", `
node: {name: a, underlay: 192.0.2.1, prefixes: [10.42.1.0/24, "fd42:1::/64"], tun: dr0, bridge: br0}
encapsulation: vxlan
peers: [{name: b, underlay: 192.0.2.2, prefixes: [10.42.2.0/24, 10.99.0.0/16]}]
`, "dr0", "br0", []string{"10.42.1.0/24", "fd42:1::/64", "10.42.2.0/24", "10.99.0.0/16"}},
		{"cluster", `
node: {name: a, underlay: 192.0.2.1}
cluster: {key_file: /k, cidr: 10.50.0.0/16}
`, "drover0", "drover-br0", []string{"10.50.0.0/16"}},
		{"cluster with static peers, no bridge", `
node: {name: a, underlay: 192.0.2.1, bridge: none}
encapsulation: vxlan
cluster: {key_file: /k}
peers: [{name: k, underlay: 192.0.2.9, prefixes: [172.16.9.0/24]}]
`, "drover0", "", []string{"10.42.0.0/16", "172.16.9.0/24"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(strings.NewReader(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			s := forwardSpec(cfg, "")
			if s.TUN != tc.tun || s.Bridge != tc.bridge {
				t.Errorf("got TUN %q bridge %q, want %q %q", s.TUN, s.Bridge, tc.tun, tc.bridge)
			}
			var got []string
			for _, p := range s.Protected {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.wantPrefixes) {
				t.Errorf("protected: got %v, want %v", got, tc.wantPrefixes)
			}
			if err := s.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

// The drop counter is a status line and a metric; without a filter the
// line says off and there is no metric.
func TestForwardFilterStatus(t *testing.T) {
	base := router.Status{Node: "a", Drops: map[string]uint64{}}
	tests := []struct {
		name     string
		ff       *router.ForwardFilterStatus
		line     string
		metrics  []string
		noMetric bool
	}{
		{"on", &router.ForwardFilterStatus{Table: "inet drover_filter", DropPackets: 7, DropBytes: 588},
			"forward filter: table inet drover_filter, dropped 7 packets (588 bytes) to containers\n",
			[]string{"drover_forward_filter_drops_total 7\n", "drover_forward_filter_drop_bytes_total 588\n", "# TYPE drover_forward_filter_drops_total counter\n"}, false},
		{"off", nil, "forward filter: off\n", nil, true},
		{"unreadable", &router.ForwardFilterStatus{Table: "inet drover_filter", Error: "no such file"},
			"forward filter: table inet drover_filter, counter unreadable: no such file\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := base
			st.ForwardFilter = tc.ff
			var s, m bytes.Buffer
			printStatus(&s, st)
			if !strings.Contains(s.String(), tc.line) {
				t.Errorf("status:\n%s\nwant the line %q", s.String(), tc.line)
			}
			_ = metrics.Write(&m, st)
			for _, want := range tc.metrics {
				if !strings.Contains(m.String(), want) {
					t.Errorf("metrics: no %q in\n%s", want, m.String())
				}
			}
			if got := strings.Contains(m.String(), "drover_forward_filter"); got == tc.noMetric {
				t.Errorf("metrics: forward filter metric present %v, want %v", got, !tc.noMetric)
			}
		})
	}
}

// drover status lists the layer-2 guard's counters when the table exists,
// and says nothing of it otherwise.
func TestStatusGuardDrops(t *testing.T) {
	var s bytes.Buffer
	printStatus(&s, router.Status{Node: "h1", GuardDrops: map[string]uint64{"drop_mac": 3, "drop_arp": 1}})
	want := "\nlayer-2 guard drops (container ports):\n  arp              1\n  mac              3\n"
	if !strings.Contains(s.String(), want) {
		t.Errorf("status:\n%s\nwant %q", s.String(), want)
	}
	s.Reset()
	printStatus(&s, router.Status{Node: "h1"})
	if strings.Contains(s.String(), "guard") {
		t.Errorf("status without the guard's table mentions it:\n%s", s.String())
	}
}
