package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@drv-sdnotify-test"} {
		c := listen(t, name)
		t.Setenv(Env, name)
		sent, err := Notify("READY=1\nSTATUS=routing")
		if err != nil || !sent {
			t.Fatalf("%s: Notify: got %v, %v; want true, nil", name, sent, err)
		}
		if got, want := read(t, c), "READY=1\nSTATUS=routing"; got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv(Env, "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Errorf("no NOTIFY_SOCKET: got %v, %v; want false, nil", sent, err)
	}
}

func TestNotifyErrors(t *testing.T) {
	for _, v := range []string{"relative/sock", filepath.Join(t.TempDir(), "absent")} {
		t.Setenv(Env, v)
		if sent, err := Notify("READY=1"); sent || err == nil {
			t.Errorf("%s=%q: got %v, %v; want false and an error", Env, v, sent, err)
		}
	}
}
