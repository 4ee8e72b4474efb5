package procstat

import (
	"errors"
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want time.Duration
		err  error
	}{
		{"cat", "14759 (cat) R 14755 14755 25490 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 1160084 3133440 388 18446744073709551615\n", 100 * time.Millisecond, nil},
		// The name may hold spaces and ')': fields count from the last one.
		{"odd name", "1 (a) b (c) S 0 0 0 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0 1 1 1\n", 3 * time.Second, nil},
		{"no paren", "1 cat R 0", 0, ErrFormat},
		{"short", "1 (cat) R 0 0 0 0 -1 0 0 0 0 0 1", 0, ErrFormat},
		{"not a number", "1 (cat) R 0 0 0 0 -1 0 0 0 0 0 x 1 0 0", 0, ErrFormat},
		{"negative", "1 (cat) R 0 0 0 0 -1 0 0 0 0 0 -1 1 0 0", 0, ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tc.in))
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("got %v, %v; want %v, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseRSS(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int64
		err  error
	}{
		{"rss", "Name:\tdrover\nVmPeak:\t 1000 kB\nVmRSS:\t    2020 kB\nRssAnon:\t 1 kB\n", 2020 << 10, nil},
		{"last line, no newline", "Name:\tx\nVmRSS:\t7 kB", 7 << 10, nil},
		{"kernel thread", "Name:\tkthreadd\nState:\tS (sleeping)\n", 0, ErrFormat},
		{"other unit", "VmRSS:\t7 MB\n", 0, ErrFormat},
		{"not a number", "VmRSS:\tseven kB\n", 0, ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRSS([]byte(tc.in))
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("got %v, %v; want %v, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestCPUShare(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name     string
		from, to Sample
		want     float64
	}{
		{"half a core", Sample{CPU: time.Second, At: t0}, Sample{CPU: 6 * time.Second, At: t0.Add(10 * time.Second)}, 0.5},
		{"idle", Sample{CPU: time.Second, At: t0}, Sample{CPU: time.Second, At: t0.Add(time.Minute)}, 0},
		{"no time passed", Sample{At: t0}, Sample{CPU: time.Second, At: t0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CPUShare(tc.from, tc.to); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReadSelf reads this test process: it has used some CPU and holds
// some memory.
func TestReadSelf(t *testing.T) {
	s, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.CPU < 0 {
		t.Fatalf("got %+v, want RSS > 0 and CPU >= 0", s)
	}
	if _, err := Read(-1); err == nil {
		t.Fatal("Read(-1): got no error, want one")
	}
}
