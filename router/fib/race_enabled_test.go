//go:build race

package fib

// raceEnabled tells tests that -race is on, so that they can spend its
// 5-10x slowdown on fewer random seeds instead of a longer CI run.
const raceEnabled = true
