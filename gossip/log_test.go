package gossip

import (
	"bytes"
	"log"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/drovernet/drover/internal/ratelog"
)

func TestLogWriter(t *testing.T) {
	var out bytes.Buffer
	var suspects []string
	w := newLogWriter(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})),
		func(n string) { suspects = append(suspects, n) })
	now := time.Unix(1000, 0)
	w.now = func() time.Time { return now }
	l := log.New(w, "", 0)

	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1234")
	l.Printf("[INFO] memberlist: Suspect node 7 has failed, no acks received")
	l.Printf("[WARN] memberlist: Refuting a suspect message (from: b)")
	for range 10 {
		l.Printf("[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=127.0.0.1:9")
	}
	now = now.Add(logWindow)
	l.Printf("[ERR] memberlist: Decrypt packet failed: again")
	l.Printf("no level at all")

	if len(suspects) != 1 || suspects[0] != "node 7" {
		t.Errorf("suspects: got %q, want [\"node 7\"]", suspects)
	}
	got := out.String()
	for _, want := range []string{
		`level=INFO msg="Suspect node 7 has failed, no acks received"`,
		`level=WARN msg="Refuting a suspect message (from: b)"`,
		`level=ERROR msg="Decrypt packet failed: again" suppressed=7`,
		`level=INFO msg="no level at all"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log output lacks %s:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "Decrypt packet failed"); n != logBurst+1 {
		t.Errorf("decrypt lines: got %d, want %d (a burst, then one after the window)", n, logBurst+1)
	}
	if strings.Contains(got, "Stream connection") {
		t.Errorf("debug line logged at level info:\n%s", got)
	}
}

// TestUndecodableMemberFlood: a member whose meta does not decode is
// reported a few times, not once per update memberlist delivers.
func TestUndecodableMemberFlood(t *testing.T) {
	leakCheck(t)
	l, tw := testLog(t, slog.LevelInfo)
	c, err := Start(FastTiming(Config{Name: "a", BindAddr: loopback, Key: testKey, Log: l}), testInfo("a", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	const updates = 1000
	for _, name := range []string{"bad1", "bad2"} {
		n := &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 9), Port: 7946, Meta: []byte{0xff, 0xff}}
		for range updates {
			c.alive(n, false)
		}
	}
	const msg = `msg="member info does not decode: member ignored"`
	got := tw.contains(msg)
	t.Logf("%d updates from each of 2 undecodable members: %d log lines", updates, got)
	if want := 2 * ratelog.Burst; got != want {
		t.Fatalf("log lines: got %d, want %d", got, want)
	}
	if m, ok := member(c, "bad1"); !ok || m.InfoErr == nil {
		t.Errorf("bad1: got listed %v, InfoErr %v; want listed with an error", ok, m.InfoErr)
	}
}
