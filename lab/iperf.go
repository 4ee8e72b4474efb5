package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Iperf runs one TCP stream of iperf3 for d from the namespace from to a
// server it starts in to, bound to addr, and returns the receiver's bits
// per second. The server serves that one test.
//
// On a machine with two CPUs or more the client runs on CPU 0 and the
// server on CPU 1: left to the scheduler, the two sometimes share a CPU
// and one 3 s run differs from the next by a third (11 to 17 Gbit/s
// between two namespaces on one bridge, seen here), more than the
// differences the tests compare.
func Iperf(from, to *NetNS, addr netip.Addr, d time.Duration) (float64, error) {
	const port = "5201"
	pin := func(cpu string, argv ...string) []string {
		if runtime.NumCPU() < 2 {
			return argv
		}
		return append([]string{"taskset", "-c", cpu}, argv...)
	}
	sargv := pin("1", "iperf3", "-s", "-1", "-B", addr.String(), "-p", port)
	srv := exec.Command("ip", append([]string{"netns", "exec", to.Name}, sargv...)...)
	var serr bytes.Buffer
	srv.Stderr = &serr
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	for try := 0; ; try++ { // until the server listens
		cargv := pin("0", "iperf3", "-c", addr.String(), "-p", port, "-t", strconv.Itoa(int(d.Seconds())), "--connect-timeout", "3000", "-J")
		out, err := exec.Command("ip", append([]string{"netns", "exec", from.Name}, cargv...)...).Output()
		res.Error = ""
		if jerr := json.Unmarshal(out, &res); jerr != nil && err == nil {
			return 0, fmt.Errorf("iperf3 output: %w", jerr)
		}
		if err == nil && res.Error == "" {
			break
		}
		if try < 50 && strings.Contains(res.Error, "unable to connect") {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return 0, fmt.Errorf("iperf3 %s -> %s (%s): %v %s: %s", from.Name, to.Name, addr, err, res.Error, serr.String())
	}
	return res.End.SumReceived.BitsPerSecond, nil
}

// Mean is the arithmetic mean of v (0 for none).
func Mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// PairedRatios compares two series measured in rounds, a[i] and b[i] back
// to back: the ratio of their means, and the median of the rounds' ratios
// a[i]/b[i], which a change of the machine's speed between rounds (or
// inside one round, spoiling that round only) does not move.
func PairedRatios(a, b []float64) (ofMeans, median float64) {
	n := min(len(a), len(b))
	if n == 0 || Mean(b[:n]) == 0 {
		return 0, 0
	}
	rs := make([]float64, 0, n)
	for i := range n {
		if b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	slices.Sort(rs)
	switch m := len(rs); {
	case m == 0:
	case m%2 == 1:
		median = rs[m/2]
	default:
		median = (rs[m/2-1] + rs[m/2]) / 2
	}
	return Mean(a[:n]) / Mean(b[:n]), median
}

// RatioInterval is the mean of the rounds' ratios a[i]/b[i] and its 95 %
// confidence interval (Student's t over the rounds): how close the two
// series are, and how sure the run is of it.
func RatioInterval(a, b []float64) (mean, lo, hi float64) {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	n := len(rs)
	if n == 0 {
		return 0, 0, 0
	}
	mean = Mean(rs)
	if n == 1 {
		return mean, mean, mean
	}
	ss := 0.0
	for _, r := range rs {
		ss += (r - mean) * (r - mean)
	}
	half := tQuantile975(n-1) * math.Sqrt(ss/float64(n-1)/float64(n))
	return mean, mean - half, mean + half
}

// tQuantile975 is the 97.5th percentile of Student's t distribution with
// df degrees of freedom (two-sided 95 %), from the standard table; above
// 30 degrees of freedom the normal's 1.96 is within 4 %.
func tQuantile975(df int) float64 {
	table := [...]float64{12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
		2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
		2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042}
	if df >= 1 && df <= len(table) {
		return table[df-1]
	}
	return 1.96
}
