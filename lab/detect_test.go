package lab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/testenv"
)

// Failure detection measured (issue 10): for each cluster.timing profile, a
// cluster of real `drover run` processes, one per namespace, talking over
// the lab's underlay; one member is stopped (SIGKILL: a crashed daemon;
// SIGSTOP: a hung host, sockets open, nothing answered) and the time until
// every other member lists it dead is read from their logs. While the CPU
// is saturated by busy loops, nobody stopped, every "member dead",
// "member suspect" and refutation is a false positive. Optionally the same
// with packet loss on every host's underlay link.
//
// By default (CI) a short version: 6 hosts, per profile one SIGKILL idle,
// one SIGSTOP under load and 10 s of load with nobody stopped; it asserts
// each detection within the profile's DetectionBound and no false "dead".
// DROVER_FD=long is the run docs/config.md reports: 10 hosts, 4 trials of
// each signal idle and under load, 2 min of load with nobody stopped, 1 min
// each at 5 % and 20 % loss (about 22 minutes for the three profiles). DROVER_FD_PROFILES, _HOSTS, _TRIALS, _SOAK, _LOSS (percents,
// comma-separated; "0" for none), _LOSS_SOAK and _SPINNERS override.
// Wrap runs whose numbers matter in `flock /tmp/drv-measure.lock`: other
// labs on the machine distort them.

// fdParams shape one TestFailureDetection run.
type fdParams struct {
	long     bool
	profiles []string
	hosts    int
	trials   int           // per signal, idle and under load (long only)
	soak     time.Duration // under CPU load, nobody stopped
	loss     []int         // percent; each a soak and one SIGKILL
	lossSoak time.Duration
	spinners int // busy-loop processes for the load
}

func fdParamsFromEnv(t *testing.T) fdParams {
	t.Helper()
	p := fdParams{
		profiles: gossip.TimingNames(), hosts: 6, trials: 1, soak: 10 * time.Second,
		lossSoak: time.Minute, spinners: 2*runtime.NumCPU() + 2,
	}
	if os.Getenv("DROVER_FD") == "long" {
		p.long, p.hosts, p.trials, p.soak, p.loss = true, 10, 4, 2*time.Minute, []int{5, 20}
	}
	if v := os.Getenv("DROVER_FD_PROFILES"); v != "" {
		p.profiles = strings.Split(v, ",")
	}
	atoi := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				t.Fatalf("%s=%q: want a count", name, v)
			}
			*dst = n
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s=%q: %v", name, v, err)
			}
			*dst = d
		}
	}
	atoi("DROVER_FD_HOSTS", &p.hosts)
	atoi("DROVER_FD_TRIALS", &p.trials)
	atoi("DROVER_FD_SPINNERS", &p.spinners)
	dur("DROVER_FD_SOAK", &p.soak)
	dur("DROVER_FD_LOSS_SOAK", &p.lossSoak)
	if v := os.Getenv("DROVER_FD_LOSS"); v != "" {
		p.loss = nil
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n >= 100 {
				t.Fatalf("DROVER_FD_LOSS: %q is not a percentage below 100", s)
			}
			if n > 0 {
				p.loss = append(p.loss, n)
			}
		}
	}
	if p.hosts < 3 {
		t.Fatalf("DROVER_FD_HOSTS=%d: want at least 3", p.hosts)
	}
	return p
}

// TestFailureDetection measures each timing profile; see above.
func TestFailureDetection(t *testing.T) {
	testenv.NeedRoot(t)
	p := fdParamsFromEnv(t)
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("RESULT machine: %d CPUs, load average %s; %d hosts, %d trials, soak %v under %d busy loops, loss %v%% (%v each)",
		runtime.NumCPU(), strings.Fields(string(load))[0], p.hosts, p.trials, p.soak, p.spinners, p.loss, p.lossSoak)
	for _, name := range p.profiles {
		t.Run(name, func(t *testing.T) { measureProfile(t, name, p) })
	}
}

// fdRun is one profile's lab and what the measurement needs of it.
type fdRun struct {
	t       *testing.T
	lab     *Lab
	profile string
	bound   time.Duration // gossip's DetectionBound for the lab's size
	trial   int           // victims rotate over hosts 2..n
}

func measureProfile(t *testing.T, profile string, p fdParams) {
	cfg, err := gossip.WithTiming(gossip.Config{}, profile)
	if err != nil {
		t.Fatal(err)
	}
	lab := newClusterLab(t, Options{Hosts: p.hosts, Containers: 1, ClusterOptions: ClusterOptions{Timing: profile, ConvergeTimeout: 90 * time.Second}})
	r := &fdRun{t: t, lab: lab, profile: profile, bound: cfg.DetectionBound(p.hosts)}
	t.Logf("%s: detection bound for %d hosts %v", profile, p.hosts, r.bound)

	// Idle.
	var idle []fdTrial
	for i := range p.trials {
		idle = append(idle, r.detect(syscall.SIGKILL))
		if p.long || i > 0 {
			idle = append(idle, r.detect(syscall.SIGSTOP))
		}
	}

	// Under load: first nobody stopped, then the trials.
	stopLoad := startSpinners(t, p.spinners)
	from := time.Now()
	tx0 := r.uplinkTx()
	r.waitFor(p.soak)
	soakEnd := time.Now()
	tx1 := r.uplinkTx()
	soak := r.events(from, soakEnd, "")
	var loaded []fdTrial
	for i := range p.trials {
		if p.long || i > 0 {
			loaded = append(loaded, r.detect(syscall.SIGKILL))
		}
		loaded = append(loaded, r.detect(syscall.SIGSTOP))
	}
	stopLoad()
	// Trials count as soak time for the members not stopped in them.
	trialFP := fdEvents{}
	for _, tr := range loaded {
		trialFP.add(tr.others)
	}
	t.Logf("RESULT %s idle: %s", profile, summarize(idle))
	t.Logf("RESULT %s under load (%d busy loops on %d CPUs): %s", profile, p.spinners, runtime.NumCPU(), summarize(loaded))
	t.Logf("RESULT %s false positives under load, %v with nobody stopped: %s; during the %d trials (%v), about members not stopped: %s",
		profile, soakEnd.Sub(from).Round(time.Second), soak, len(loaded), time.Since(soakEnd).Round(time.Second), trialFP)
	t.Logf("RESULT %s underlay traffic under load, nobody stopped: %.0f bytes/s sent per host (gossip only: no container traffic)",
		profile, float64(tx1-tx0)/soakEnd.Sub(from).Seconds()/float64(p.hosts))
	for _, tr := range append(slices.Clone(idle), loaded...) {
		if tr.all > r.bound {
			t.Errorf("%s: %s of %s: every other member listed it dead after %v, want at most %v (DetectionBound)",
				profile, tr.sig, tr.victim, tr.all, r.bound)
		}
	}
	if soak.dead > 0 || trialFP.dead > 0 {
		t.Errorf("%s: got %d false 'member dead' under load with nobody stopped and %d during the trials, want 0", profile, soak.dead, trialFP.dead)
	}

	for _, pct := range p.loss {
		r.lossRun(pct, p.lossSoak)
	}
}

// lossRun drops pct % of the packets arriving on every host's uplink (so
// about pct % of every datagram and segment between two hosts) for soak,
// counting false positives, then measures one SIGKILL under that loss.
func (r *fdRun) lossRun(pct int, soak time.Duration) {
	t := r.t
	heal := r.setLoss(pct)
	from := time.Now()
	r.waitFor(soak)
	fp := r.events(from, time.Now(), "")
	tr := r.detect(syscall.SIGKILL, heal)
	t.Logf("RESULT %s with %d%% loss on every link: %v with nobody stopped: %s; SIGKILL of %s: first verdict %v, every member %v, about others meanwhile: %s",
		r.profile, pct, soak, fp, tr.victim, tr.first.Round(time.Millisecond), tr.all.Round(time.Millisecond), tr.others)
}

// waitFor lets d pass, failing if a router exits meanwhile.
func (r *fdRun) waitFor(d time.Duration) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.After(d)
	for {
		for _, h := range r.lab.Hosts {
			select {
			case <-h.Router.Done():
				r.t.Fatalf("router %s exited: %v\n%s", h.Name, h.Router.ExitErr(), h.Router.LogTail(20))
			default:
			}
		}
		select {
		case <-end:
			return
		case <-r.t.Context().Done():
			r.t.Fatal(r.t.Context().Err())
		case <-tick.C:
		}
	}
}

// fdTrial is one detection: how long after the signal the first member,
// and every other member, declared the victim dead; and the false
// positives about the members not stopped meanwhile.
type fdTrial struct {
	sig        syscall.Signal
	victim     string
	first, all time.Duration
	others     fdEvents
}

// detect stops the next victim with sig and waits until every other member
// lists it dead; then it brings the victim back (SIGKILL: a new process
// with the same state; SIGSTOP: SIGCONT) and waits for the cluster to
// converge again. before, if given, runs between the verdict and the
// return (to remove packet loss before the restart).
func (r *fdRun) detect(sig syscall.Signal, before ...func() error) fdTrial {
	t, lab := r.t, r.lab
	t.Helper()
	r.trial++
	victim := lab.Hosts[1+(r.trial-1)%(len(lab.Hosts)-1)]
	var others []*Host
	for _, h := range lab.Hosts {
		if h != victim {
			others = append(others, h)
		}
	}
	pid := victim.Router.PID()
	at := time.Now()
	switch sig {
	case syscall.SIGKILL:
		if err := lab.KillRouter(victim); err != nil {
			t.Fatal(err)
		}
	case syscall.SIGSTOP:
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	resumed := false
	resume := func() {
		if sig == syscall.SIGSTOP && !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume) // a failed wait must not leave it stopped for Close
	// Wait past the bound (a slow verdict is reported, then failed).
	err := Poll(t.Context(), 2*r.bound+10*time.Second, 50*time.Millisecond, func() error {
		for _, h := range others {
			v, err := h.Router.Cluster()
			if err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
			if m := v.Member(victim.Name); m == nil || m.State != "dead" {
				return fmt.Errorf("host %s lists %s as %v", h.Name, victim.Name, m)
			}
		}
		return nil
	})
	if err != nil {
		resume()
		t.Fatalf("%s of %s: %v\n%s", sigName(sig), victim.Name, err, lab.ClusterViews())
	}
	end := time.Now()
	tr := fdTrial{sig: sig, victim: victim.Name}
	ev := r.logEvents(at, end)
	for _, h := range others {
		var d time.Duration
		for _, e := range ev {
			if e.host == h.Name && e.kind == "dead" && e.peer == victim.Name {
				d = e.at.Sub(at)
				break
			}
		}
		if d == 0 { // not in the log (yet): the poll saw it
			d = end.Sub(at)
		}
		tr.all = max(tr.all, d)
		if tr.first == 0 || d < tr.first {
			tr.first = d
		}
	}
	for _, e := range ev {
		if e.host != victim.Name && e.subject() != victim.Name {
			tr.others.count(e)
		}
	}
	t.Logf("%s: %s of %s: first verdict %v, every member %v; about others meanwhile: %s",
		r.profile, sigName(sig), victim.Name, tr.first.Round(time.Millisecond), tr.all.Round(time.Millisecond), tr.others)
	for _, f := range before {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	resume()
	if sig == syscall.SIGKILL {
		if err := lab.StartRouter(t.Context(), victim); err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.WaitConverged(t.Context(), nil, 2*r.bound+30*time.Second); err != nil {
		t.Fatal(err)
	}
	return tr
}

// startSpinners starts n busy loops (sh -c 'while :; do :; done', each its
// own process) and returns the function that kills them, by PID; it is
// also registered as a cleanup.
func startSpinners(t *testing.T, n int) func() {
	t.Helper()
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		cmds = nil
	}
	t.Cleanup(stop)
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	return stop
}

// lossTable is the nftables table setLoss installs in host namespaces.
const lossTable = "drv_loss"

// setLoss drops pct % of the packets arriving on every host's uplink, at
// random; it returns the function that removes the rule (also registered
// as a cleanup).
func (r *fdRun) setLoss(pct int) func() error {
	t := r.t
	var set []*Host
	heal := func() error {
		var errs []string
		for _, h := range set {
			if out, err := exec.Command("ip", "netns", "exec", h.NS.Name, "nft", "delete", "table", "inet", lossTable).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Sprintf("host %s: %v: %s", h.Name, err, out))
			}
		}
		set = nil
		if len(errs) > 0 {
			return fmt.Errorf("remove loss: %s", strings.Join(errs, "; "))
		}
		return nil
	}
	t.Cleanup(func() { _ = heal() })
	for _, h := range r.lab.Hosts {
		rules := fmt.Sprintf("table inet %s {\n\tchain in { type filter hook prerouting priority -320; iifname %q numgen random mod 100 < %d drop; }\n}\n",
			lossTable, h.Uplink, pct)
		cmd := exec.Command("ip", "netns", "exec", h.NS.Name, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("host %s: loss rule: %v: %s", h.Name, err, out)
		}
		set = append(set, h)
	}
	return heal
}

// uplinkTx sums the bytes every host has sent on its uplink.
func (r *fdRun) uplinkTx() uint64 {
	var sum uint64
	for _, h := range r.lab.Hosts {
		err := withNetlink(h.NS, func(nl *netlink.Handle) error {
			l, err := nl.LinkByName(h.Uplink)
			if err != nil {
				return err
			}
			sum += l.Attrs().Statistics.TxBytes
			return nil
		})
		if err != nil {
			r.t.Fatal(err)
		}
	}
	return sum
}

// fdEvent is one membership line of a router's log.
type fdEvent struct {
	host string // whose log
	at   time.Time
	kind string // dead, suspect, refute
	peer string // dead, suspect: the member; refute: "" (the host itself)
}

// subject is the member the event is about.
func (e fdEvent) subject() string {
	if e.peer != "" {
		return e.peer
	}
	return e.host
}

// fdEvents counts false positives: "member dead" and "member suspect"
// lines, and refutations (a member told it was suspected, or declared
// dead, denying it: memberlist's rate-limited WARN lines, so a lower
// bound in a storm).
type fdEvents struct{ dead, suspect, refute int }

func (f *fdEvents) count(e fdEvent) {
	switch e.kind {
	case "dead":
		f.dead++
	case "suspect":
		f.suspect++
	case "refute":
		f.refute++
	}
}

func (f *fdEvents) add(g fdEvents) {
	f.dead, f.suspect, f.refute = f.dead+g.dead, f.suspect+g.suspect, f.refute+g.refute
}

func (f fdEvents) String() string {
	return fmt.Sprintf("%d dead, %d suspect, %d refuted", f.dead, f.suspect, f.refute)
}

// events counts the membership events of every log between from and to,
// leaving out those about skip.
func (r *fdRun) events(from, to time.Time, skip string) fdEvents {
	var f fdEvents
	for _, e := range r.logEvents(from, to) {
		if skip == "" || e.subject() != skip {
			f.count(e)
		}
	}
	return f
}

// logEvents reads the membership events between from and to from every
// router log of the lab (all runs: NAME.log and NAME-RUN.log).
func (r *fdRun) logEvents(from, to time.Time) []fdEvent {
	files, _ := filepath.Glob(filepath.Join(r.lab.Dir, "h*.log"))
	var out []fdEvent
	for _, f := range files {
		host := strings.TrimSuffix(filepath.Base(f), ".log")
		host, _, _ = strings.Cut(host, "-")
		fh, err := os.Open(f)
		if err != nil {
			r.t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			e, ok := parseEvent(sc.Text())
			if ok && !e.at.Before(from) && !e.at.After(to) {
				e.host = host
				out = append(out, e)
			}
		}
		fh.Close()
	}
	slices.SortFunc(out, func(a, b fdEvent) int { return a.at.Compare(b.at) })
	return out
}

// parseEvent reads one slog text line: time=T level=L msg="member dead"
// ... peer=NAME, or a memberlist refutation.
func parseEvent(line string) (fdEvent, bool) {
	var e fdEvent
	switch {
	case strings.Contains(line, `msg="member dead"`):
		e.kind = "dead"
	case strings.Contains(line, `msg="member suspect"`):
		e.kind = "suspect"
	case strings.Contains(line, "Refuting a suspect message"), strings.Contains(line, "Refuting a dead message"):
		e.kind = "refute"
	default:
		return e, false
	}
	ts, ok := field(line, "time")
	if !ok {
		return e, false
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return e, false
	}
	e.at = at
	if e.kind != "refute" {
		if e.peer, ok = field(line, "peer"); !ok {
			return e, false
		}
	}
	return e, true
}

// field returns the unquoted value of key=value in a slog text line.
func field(line, key string) (string, bool) {
	i := strings.Index(" "+line, " "+key+"=")
	if i < 0 {
		return "", false
	}
	v := line[i+len(key)+1:]
	if end := strings.IndexByte(v, ' '); end >= 0 {
		v = v[:end]
	}
	return v, true
}

// summarize gives the median and maximum detection times of trials, per
// signal.
func summarize(trials []fdTrial) string {
	var parts []string
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
		var all, first []time.Duration
		for _, tr := range trials {
			if tr.sig == sig {
				all, first = append(all, tr.all), append(first, tr.first)
			}
		}
		if len(all) == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s ×%d: every member median %v max %v (first verdict median %v)",
			sigName(sig), len(all), median(all), slices.Max(all).Round(time.Millisecond), median(first)))
	}
	return strings.Join(parts, "; ")
}

func sigName(s syscall.Signal) string {
	if s == syscall.SIGKILL {
		return "SIGKILL"
	}
	return "SIGSTOP"
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return m.Round(time.Millisecond)
}
