//go:build !race

package tun

// raceEnabled: see race_enabled_test.go.
const raceEnabled = false
