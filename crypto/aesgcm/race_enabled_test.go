//go:build race

package aesgcm_test

// raceEnabled: the race detector instruments and may allocate, so
// allocation counts are not meaningful under -race.
const raceEnabled = true
