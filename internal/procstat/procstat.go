// Package procstat reads what a process has cost so far from /proc: CPU
// time (/proc/PID/stat) and resident memory (/proc/PID/status). The lab
// uses it to report each router's CPU and RSS; it reads no other file and
// keeps no state.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ClockTick is the unit of the CPU times in /proc/PID/stat. Linux reports
// them in USER_HZ, which is 100 on every architecture it runs on (sysconf
// _SC_CLK_TCK); the kernel converts from its internal HZ.
const ClockTick = 10 * time.Millisecond

// ErrFormat means a /proc file did not have the expected layout.
var ErrFormat = errors.New("procstat: unexpected format")

// Sample is one reading of a process.
type Sample struct {
	// CPU is user plus system time since the process started (its own
	// threads, not waited-for children).
	CPU time.Duration
	// RSS is the resident set size now (VmRSS).
	RSS int64
	// At is when the sample was read.
	At time.Time
}

// Read samples process pid.
func Read(pid int) (Sample, error) {
	at := time.Now()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Sample{}, err
	}
	cpu, err := ParseStat(st)
	if err != nil {
		return Sample{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Sample{}, err
	}
	rss, err := ParseRSS(status)
	if err != nil {
		return Sample{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return Sample{CPU: cpu, RSS: rss, At: at}, nil
}

// CPUShare is the CPU a process used between two samples of it, as a
// fraction of one core (1 = one core busy the whole time).
func CPUShare(from, to Sample) float64 {
	wall := to.At.Sub(from.At)
	if wall <= 0 {
		return 0
	}
	return float64(to.CPU-from.CPU) / float64(wall)
}

// ParseStat returns utime+stime from the contents of /proc/PID/stat
// (proc(5)). The command name, field 2, is in parentheses and may itself
// hold spaces and parentheses, so fields are counted from the last ')'.
func ParseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: no ')' after the command name", ErrFormat)
	}
	// After ") ": field 3 (state) is rest[0]; utime is field 14, stime 15.
	rest := bytes.Fields(b[i+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(rest) <= stime {
		return 0, fmt.Errorf("%w: %d fields after the command name, want at least %d", ErrFormat, len(rest), stime+1)
	}
	var ticks int64
	for _, f := range [][]byte{rest[utime], rest[stime]} {
		n, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%w: CPU time %q", ErrFormat, f)
		}
		ticks += n
	}
	return time.Duration(ticks) * ClockTick, nil
}

// ParseRSS returns VmRSS, in bytes, from the contents of /proc/PID/status.
// A kernel thread has no VmRSS line: that is ErrFormat too.
func ParseRSS(b []byte) (int64, error) {
	for line := range bytes.Lines(b) {
		v, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%w: VmRSS line %q", ErrFormat, bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("%w: VmRSS %q", ErrFormat, f[0])
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%w: no VmRSS line", ErrFormat)
}
