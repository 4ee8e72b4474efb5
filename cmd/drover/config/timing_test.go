package config

import (
	"errors"
	"strings"
	"testing"
)

// TestClusterTiming: cluster.timing takes the profiles' names, defaults to
// lan, and anything else is an error at cluster.timing naming the choices.
func TestClusterTiming(t *testing.T) {
	for _, tc := range []struct {
		timing string // "" leaves the key out
		want   string // the value after Default; "" for an error
	}{
		{"", "lan"},
		{"lan", "lan"},
		{"fast", "fast"},
		{"edge", "edge"},
		{"slow", ""},
		{"LAN", ""},
		{"wan", ""},
	} {
		t.Run(tc.timing, func(t *testing.T) {
			y := "node: {name: a, underlay: 192.0.2.1}\ncluster: {key_file: /k"
			if tc.timing != "" {
				y += ", timing: " + tc.timing
			}
			c, err := Parse(strings.NewReader(y + "}\n"))
			if tc.want != "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				if c.Cluster.Timing != tc.want {
					t.Errorf("cluster.timing: got %q, want %q", c.Cluster.Timing, tc.want)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %v, want config.Errors", err)
			}
			for _, fe := range es {
				if fe.Path == "cluster.timing" && strings.Contains(fe.Msg, `"`+tc.timing+`" is not one of lan, fast, edge`) {
					return
				}
			}
			t.Errorf("got %v, want an error at cluster.timing listing lan, fast, edge", err)
		})
	}
}
