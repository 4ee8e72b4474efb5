//go:build !race

package aesgcm_test

const raceEnabled = false
