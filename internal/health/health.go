package health

import (
	"errors"
	"fmt"
	"time"
)

// StepStale is how old the cluster agent's last step may be before the
// daemon counts as not alive. The agent steps at least every 200 ms (and
// on every membership change); a step holds netlink calls, SA installs and
// an fsync of the block claim, which take milliseconds. Fifty missed ticks
// mean the loop is stuck (a hung netlink call, a deadlock), which only a
// restart cures.
const StepStale = 10 * time.Second

// State is what the daemon knows of itself at one moment.
type State struct {
	// RouterRunning: both pipelines of the router (egress and ingress)
	// are running (router.Router.Running). They block on the TUN and the
	// socket while idle, so this is the most a probe can know of them
	// without traffic: a pipeline that fails returns, and so does Run.
	RouterRunning bool
	// Prefixes are the router's own prefixes (router.Status.Prefixes):
	// static node.prefixes, or in cluster mode the block once it is handed
	// out. The CNI plugin hands out addresses from these only.
	Prefixes []string
	// Cluster is set in cluster mode.
	Cluster *Cluster
}

// Cluster is the cluster agent's part of State.
type Cluster struct {
	// LastStep is when the agent's control loop last finished a step
	// (agent.Agent.Health); zero before the first.
	LastStep time.Time
	// Joined: another member has been seen alive in this run.
	Joined bool
	// Founder: this host may start a cluster alone (cluster.bootstrap, or
	// no seeds to join), so being alone is its normal first state.
	Founder bool
	// BlockNote says why the host has no block handed out, if it has none
	// (gossip.View.BlockNote).
	BlockNote string
}

// Live returns nil if the daemon's loops are alive at now, or the reason
// they are not. A liveness probe that fails restarts the daemon, so only
// what a restart cures fails it: a stopped router pipeline, an agent loop
// that no longer steps. Being alone or without a block is not such a
// thing (Ready says it).
func (s State) Live(now time.Time) error {
	if !s.RouterRunning {
		return errors.New("router: not running (its pipelines have not started, or one has stopped)")
	}
	if c := s.Cluster; c != nil {
		if c.LastStep.IsZero() {
			return errors.New("cluster agent: has not stepped yet")
		}
		if age := now.Sub(c.LastStep); age > StepStale {
			return fmt.Errorf("cluster agent: last step %v ago (more than %v: its loop is stuck)", age.Round(time.Millisecond), StepStale)
		}
	}
	return nil
}

// Ready returns nil if the daemon can carry traffic at now, or the reason
// it cannot: it is alive, it has prefixes to hand out (in cluster mode: a
// block, claimed and settled), and in cluster mode it has joined, so that
// it knows the other hosts' blocks and has routes and keys for them. A
// founder is ready alone. Once joined it stays ready while alone: the
// others going away is not this host's fault, and its own containers still
// reach each other.
func (s State) Ready(now time.Time) error {
	if err := s.Live(now); err != nil {
		return fmt.Errorf("not alive: %w", err)
	}
	c := s.Cluster
	if len(s.Prefixes) == 0 {
		if c != nil && c.BlockNote != "" {
			return errors.New(c.BlockNote)
		}
		if c != nil {
			return errors.New("no block handed out yet")
		}
		return errors.New("no prefixes")
	}
	if c != nil && !c.Joined && !c.Founder {
		return errors.New("not joined to any member yet: the other hosts' blocks, routes and keys are unknown (cluster.join)")
	}
	return nil
}
