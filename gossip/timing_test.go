package gossip

import (
	"strings"
	"testing"
	"time"
)

// timings are the fields of a Config that a timing profile sets.
type timings struct {
	probe, probeTimeout, gossip, pushPull, reclaim, toTheDead, tcp, reconnect, joinMin, joinMax time.Duration
	suspicion, suspicionMax, awareness, indirect                                                int
}

func timingsOf(c Config) timings {
	return timings{c.ProbeInterval, c.ProbeTimeout, c.GossipInterval, c.PushPullInterval, c.DeadNodeReclaimTime,
		c.GossipToTheDeadTime, c.TCPTimeout, c.ReconnectInterval, c.JoinRetryMin, c.JoinRetryMax,
		c.SuspicionMult, c.SuspicionMaxTimeoutMult, c.AwarenessMaxMultiplier, c.IndirectChecks}
}

// TestTimingProfiles: each profile sets every timing, to the values its doc
// comment and docs/config.md state; withDefaults keeps them; memberlist
// gets them.
func TestTimingProfiles(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name  string
		want  timings
		bound time.Duration // DetectionBound(10)
	}{
		{"", timings{time.Second, 500 * ms, 200 * ms, 30 * time.Second, 10 * time.Second, 30 * time.Second, 10 * time.Second, 30 * time.Second, time.Second, 4 * time.Second, 4, 6, 8, 3}, 3*time.Second + 24*time.Second + 2*time.Second},
		{TimingLAN, timings{time.Second, 500 * ms, 200 * ms, 30 * time.Second, 10 * time.Second, 30 * time.Second, 10 * time.Second, 30 * time.Second, time.Second, 4 * time.Second, 4, 6, 8, 3}, 29 * time.Second},
		{TimingFast, timings{200 * ms, 100 * ms, 50 * ms, 2 * time.Second, 500 * ms, 5 * time.Second, 2 * time.Second, time.Second, 250 * ms, 2 * time.Second, 4, 6, 8, 3}, 600*ms + 4800*ms + 500*ms},
		{TimingEdge, timings{2 * time.Second, time.Second, 200 * ms, 30 * time.Second, 10 * time.Second, 60 * time.Second, 15 * time.Second, 30 * time.Second, time.Second, 4 * time.Second, 6, 6, 10, 4}, 6*time.Second + 72*time.Second + 2*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := WithTiming(Config{Name: "a", Key: testKey}, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if got := timingsOf(cfg); got != tc.want {
				t.Errorf("WithTiming(%q):\n got %+v\nwant %+v", tc.name, got, tc.want)
			}
			full, err := cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			if got := timingsOf(full); got != tc.want {
				t.Errorf("withDefaults changed the profile:\n got %+v\nwant %+v", got, tc.want)
			}
			mc := full.memberlistConfig()
			if mc.ProbeInterval != tc.want.probe || mc.ProbeTimeout != tc.want.probeTimeout || mc.SuspicionMult != tc.want.suspicion ||
				mc.SuspicionMaxTimeoutMult != tc.want.suspicionMax || mc.AwarenessMaxMultiplier != tc.want.awareness ||
				mc.IndirectChecks != tc.want.indirect || mc.TCPTimeout != tc.want.tcp || mc.GossipToTheDeadTime != tc.want.toTheDead {
				t.Errorf("memberlist config: got probe %v/%v suspicion %d×%d awareness %d indirect %d TCP %v to-the-dead %v, want %+v",
					mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult, mc.SuspicionMaxTimeoutMult, mc.AwarenessMaxMultiplier,
					mc.IndirectChecks, mc.TCPTimeout, mc.GossipToTheDeadTime, tc.want)
			}
			if got := cfg.DetectionBound(10); got != tc.bound {
				t.Errorf("DetectionBound(10): got %v, want %v", got, tc.bound)
			}
		})
	}
}

// TestLANTimingIsDefault: a Config with no timings set gets exactly
// LANTiming's, so the profile called "lan" is what "no profile" means.
func TestLANTimingIsDefault(t *testing.T) {
	def, err := Config{Name: "a", Key: testKey}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := timingsOf(def), timingsOf(LANTiming(Config{})); got != want {
		t.Errorf("defaults:\n got %+v\nwant LANTiming's %+v", got, want)
	}
}

func TestWithTimingUnknown(t *testing.T) {
	_, err := WithTiming(Config{}, "slow")
	if err == nil || !strings.Contains(err.Error(), `"slow" is not one of lan, fast, edge`) {
		t.Errorf("WithTiming(slow): got %v, want an error listing lan, fast, edge", err)
	}
}

// TestConfigMultipliers: the new multipliers are checked like the others.
func TestConfigMultipliers(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string // "" for ok
	}{
		{"defaults", func(*Config) {}, ""},
		{"awareness off", func(c *Config) { c.AwarenessMaxMultiplier = 1 }, ""},
		{"negative suspicion max", func(c *Config) { c.SuspicionMaxTimeoutMult = -1 }, "suspicion max timeout multiplier -1 out of range"},
		{"negative awareness", func(c *Config) { c.AwarenessMaxMultiplier = -2 }, "awareness max multiplier -2 out of range"},
		{"huge indirect", func(c *Config) { c.IndirectChecks = 1000 }, "indirect checks 1000 out of range"},
		{"negative suspicion", func(c *Config) { c.SuspicionMult = -1 }, "suspicion multiplier -1 out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Name: "a", Key: testKey}
			tc.set(&cfg)
			_, err := cfg.withDefaults()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
