//go:build race

package gso

// raceEnabled: the race detector's instrumentation can allocate, so
// allocation counts are not meaningful under -race.
const raceEnabled = true
