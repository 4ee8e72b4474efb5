package policy_test

import (
	"testing"

	"github.com/drovernet/drover/policy/policytest"
)

// TestUpstreamCases checks policy.Evaluate against every ported upstream
// e2e case: every probe's 72 non-loopback cells on each port and protocol.
func TestUpstreamCases(t *testing.T) {
	n := policytest.Check(t, "testdata/upstream-netpol.yaml", "", policytest.Evaluated)
	t.Logf("%d cells evaluated", n)
}

// TestProjectCases: drover's cases for the project-isolation preset.
func TestProjectCases(t *testing.T) {
	n := policytest.Check(t, "testdata/project-isolation.yaml", "project", policytest.Evaluated)
	t.Logf("%d cells evaluated", n)
}
