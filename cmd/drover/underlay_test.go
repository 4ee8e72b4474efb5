package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/internal/sdnotify"
	"github.com/drovernet/drover/tun"
)

var errNetlink = errors.New("netlink: operation not permitted")

// fakeUnderlay is a lookup in which the address appears on drv-ul0 at the
// call numbered appear (1 = the first; 0 = never), or which fails with err
// at the call numbered fail. onCall runs on every call before that.
type fakeUnderlay struct {
	appear, fail int
	onCall       func(call int)
	calls        int
}

func (f *fakeUnderlay) lookup(addr netip.Addr) (tun.UnderlayLink, error) {
	f.calls++
	if f.onCall != nil {
		f.onCall(f.calls)
	}
	switch {
	case f.calls == f.fail:
		return tun.UnderlayLink{}, errNetlink
	case f.appear != 0 && f.calls >= f.appear:
		return tun.UnderlayLink{Name: "drv-ul0", Subnets: []netip.Prefix{netip.PrefixFrom(addr, 24).Masked()}}, nil
	}
	return tun.UnderlayLink{}, nil
}

// waitUnderlay waits only when told to, names node.underlay in every
// error, and never calls a missing address the configuration's fault
// (exit 2: systemd would not restart the daemon). Intervals of a millisecond keep it fast.
func TestWaitUnderlay(t *testing.T) {
	addr := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name     string
		fake     fakeUnderlay
		timeout  time.Duration
		cancel   int // cancel ctx at this call; 0 never
		wantLink string
		wantErr  string // "" no error
		wantIs   error
		wantLog  []string
		noLog    []string
	}{
		{name: "there at once, no wait configured", fake: fakeUnderlay{appear: 1}, wantLink: "drv-ul0",
			noLog: []string{"waiting"}},
		{name: "there at once, wait configured", fake: fakeUnderlay{appear: 1}, timeout: time.Minute, wantLink: "drv-ul0",
			noLog: []string{"waiting", "underlay address up"}},
		{name: "absent, no wait configured", fake: fakeUnderlay{},
			wantErr: "node.underlay: 192.0.2.1 is on no interface of this host (set node.underlay_wait to wait for it)",
			noLog:   []string{"waiting"}},
		{name: "appears on the fourth look", fake: fakeUnderlay{appear: 4}, timeout: time.Minute, wantLink: "drv-ul0",
			wantLog: []string{`msg="waiting for the underlay address" address=192.0.2.1 timeout=1m0s`, `msg="underlay address up" address=192.0.2.1 interface=drv-ul0 waited=`}},
		{name: "never appears", fake: fakeUnderlay{}, timeout: 30 * time.Millisecond,
			wantErr: "node.underlay: 192.0.2.1 appeared on no interface within 30ms",
			wantLog: []string{"waiting for the underlay address"}, noLog: []string{"underlay address up"}},
		{name: "lookup fails at once", fake: fakeUnderlay{fail: 1}, timeout: time.Minute, wantIs: errNetlink,
			wantErr: "node.underlay: looking for 192.0.2.1 on this host's interfaces: netlink: operation not permitted",
			noLog:   []string{"waiting"}},
		{name: "lookup fails while waiting", fake: fakeUnderlay{fail: 3}, timeout: time.Minute, wantIs: errNetlink,
			wantErr: "node.underlay: looking for 192.0.2.1 on this host's interfaces: netlink: operation not permitted"},
		{name: "stopped while waiting", fake: fakeUnderlay{}, timeout: time.Minute, cancel: 2, wantIs: context.Canceled,
			wantErr: "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := tc.fake
			f.onCall = func(call int) {
				if call == tc.cancel {
					cancel()
				}
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			start := time.Now()
			ul, err := waitUnderlay(ctx, addr, f.lookup, tc.timeout, time.Millisecond, log)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v; want milliseconds", took)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got error %v, want none", err)
			case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
				t.Fatalf("got error %v, want %q", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false, want true", err, tc.wantIs)
			}
			if errors.Is(err, config.ErrInvalid) {
				t.Errorf("errors.Is(%v, config.ErrInvalid): got true, want false (exit 2 would stop systemd's restarts)", err)
			}
			if ul.Name != tc.wantLink {
				t.Errorf("link: got %q, want %q", ul.Name, tc.wantLink)
			}
			for _, want := range tc.wantLog {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log %q does not contain %q", logs.String(), want)
				}
			}
			for _, not := range tc.noLog {
				if strings.Contains(logs.String(), not) {
					t.Errorf("log %q contains %q; want it not to", logs.String(), not)
				}
			}
		})
	}
}

// Under systemd the unit's status says what the daemon waits for, so
// `systemctl status drover` explains a unit stuck in activating.
func TestWaitUnderlayTellsSystemd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv(sdnotify.Env, path)
	f := fakeUnderlay{appear: 2}
	if _, err := waitUnderlay(context.Background(), netip.MustParseAddr("2001:db8::1"), f.lookup, time.Minute, time.Millisecond, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(buf[:n]), "STATUS=waiting for underlay 2001:db8::1"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{60 * time.Second, "60s"},
		{time.Hour, "1h"},
		{90 * time.Minute, "5400s"},
		{1500 * time.Millisecond, "1.5s"},
		{30 * time.Millisecond, "30ms"},
	} {
		if got := seconds(tc.d); got != tc.want {
			t.Errorf("seconds(%v): got %q, want %q", tc.d, got, tc.want)
		}
	}
}
