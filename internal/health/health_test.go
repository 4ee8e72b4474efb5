package health

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func TestLiveReady(t *testing.T) {
	block := []string{"10.42.1.0/24"}
	cluster := func(ago time.Duration, joined, founder bool, note string) *Cluster {
		c := &Cluster{Joined: joined, Founder: founder, BlockNote: note}
		if ago >= 0 {
			c.LastStep = t0.Add(-ago)
		}
		return c
	}
	for _, c := range []struct {
		name  string
		st    State
		live  string // "" for nil, else a substring of the error
		ready string
	}{
		{"static, running", State{RouterRunning: true, Prefixes: block}, "", ""},
		{"static, router not started", State{Prefixes: block}, "router: not running", "not alive: router: not running"},
		{"cluster, ready", State{RouterRunning: true, Prefixes: block, Cluster: cluster(200*time.Millisecond, true, false, "")}, "", ""},
		{"cluster, agent never stepped", State{RouterRunning: true, Prefixes: block, Cluster: cluster(-1, true, false, "")}, "has not stepped yet", "not alive: cluster agent"},
		{"cluster, last step 9 s ago", State{RouterRunning: true, Prefixes: block, Cluster: cluster(9*time.Second, true, false, "")}, "", ""},
		{"cluster, last step 11 s ago", State{RouterRunning: true, Prefixes: block, Cluster: cluster(11*time.Second, true, false, "")}, "last step 11s ago (more than 10s: its loop is stuck)", "not alive"},
		{"cluster, router stopped", State{Prefixes: block, Cluster: cluster(0, true, false, "")}, "router: not running", "not alive"},
		{"cluster, block settling", State{RouterRunning: true, Cluster: cluster(0, true, false, "claiming 10.42.1.0/24: not handed out before ...")}, "", "claiming 10.42.1.0/24"},
		{"cluster, no block, no note", State{RouterRunning: true, Cluster: cluster(0, true, false, "")}, "", "no block handed out yet"},
		{"cluster, restored block, not joined", State{RouterRunning: true, Prefixes: block, Cluster: cluster(0, false, false, "")}, "", "not joined to any member yet"},
		{"cluster, founder alone", State{RouterRunning: true, Prefixes: block, Cluster: cluster(0, false, true, "")}, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			check := func(what string, err error, want string) {
				t.Helper()
				switch {
				case want == "" && err != nil:
					t.Errorf("%s: got %q, want ok", what, err)
				case want != "" && err == nil:
					t.Errorf("%s: got ok, want an error containing %q", what, want)
				case want != "" && !strings.Contains(err.Error(), want):
					t.Errorf("%s: got %q, want it to contain %q", what, err, want)
				}
			}
			check("Live", c.st.Live(t0), c.live)
			check("Ready", c.st.Ready(t0), c.ready)
		})
	}
}
