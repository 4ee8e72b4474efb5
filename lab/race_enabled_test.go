//go:build race

package lab

// raceEnabled: the race detector slows the test process (its probes and
// polls), and .ci/run runs every package at once under it; the scale lab
// skips there and runs alone in the scale step.
const raceEnabled = true
