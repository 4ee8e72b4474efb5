package cni

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/drovernet/drover/cni/ipam"
)

func TestStoreDir(t *testing.T) {
	for _, tc := range []struct {
		dataDir, network string
		want             string // "" : an error containing msg
		msg              string
	}{
		{"", "drover", filepath.Join(ipam.DefaultDataDir, "drover"), ""},
		{"/tmp/x/", "net-1.a_b", "/tmp/x/net-1.a_b", ""},
		{"/tmp/x", "", "", "network: missing"},
		{"/tmp/x", "..", "", `network ".." may only hold`},
		{"/tmp/x", "a/b", "", `network "a/b" may only hold`},
		{"/tmp/x", strings.Repeat("a", 129), "", "at most 128"},
		{"tmp/x", "drover", "", `data_dir "tmp/x" is not an absolute path`},
	} {
		got, err := StoreDir(tc.dataDir, tc.network)
		switch {
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("StoreDir(%q, %q): got %q, %v; want %q", tc.dataDir, tc.network, got, err, tc.want)
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), tc.msg)):
			t.Errorf("StoreDir(%q, %q): got %q, %v; want an error containing %q", tc.dataDir, tc.network, got, err, tc.msg)
		}
	}
}

// Reserved reads what the plugin reserved as the notices ADD sent; it
// creates nothing where there is nothing.
func TestReservedAndNetworks(t *testing.T) {
	dataDir := t.TempDir()
	if ls, err := Reserved(dataDir, "none"); err != nil || ls != nil {
		t.Fatalf("Reserved of a missing directory: got %v, %v; want nothing", ls, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Reserved created the directory: %v", err)
	}
	if ns, err := Networks(filepath.Join(dataDir, "missing")); err != nil || ns != nil {
		t.Fatalf("Networks of a missing data dir: got %v, %v", ns, err)
	}
	s, err := ipam.Open(filepath.Join(dataDir, "net1"))
	if err != nil {
		t.Fatal(err)
	}
	pool := ipam.Pool{Subnet: netip.MustParsePrefix("10.42.5.0/24"), Exclude: []netip.Addr{netip.MustParseAddr("10.42.5.1")}}
	for _, cid := range []string{"a", "b"} {
		if _, err := s.Allocate(pool, ipam.Owner{ContainerID: cid, IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	// An unreadable reservation (owner unknown) and foreign files are left out.
	if err := os.WriteFile(filepath.Join(s.Dir(), "10.42.5.99"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dataDir, "not a network"), 0o700)
	os.WriteFile(filepath.Join(dataDir, "file"), nil, 0o600)

	ls, err := Reserved(dataDir, "net1")
	if err != nil {
		t.Fatal(err)
	}
	want := []Local{
		{Network: "net1", ContainerID: "a", IfName: "eth0", IP: "10.42.5.2", MAC: "0a:58:0a:2a:05:02", DataDir: dataDir},
		{Network: "net1", ContainerID: "b", IfName: "eth0", IP: "10.42.5.3", MAC: "0a:58:0a:2a:05:03", DataDir: dataDir},
	}
	if !reflect.DeepEqual(ls, want) {
		t.Fatalf("Reserved: got %+v, want %+v", ls, want)
	}
	if ns, err := Networks(dataDir); err != nil || !slices.Equal(ns, []string{"net1"}) {
		t.Fatalf("Networks: got %v, %v; want [net1]", ns, err)
	}
	if _, err := Reserved(dataDir, "../etc"); err == nil {
		t.Fatal("Reserved accepted a network name that leaves the data dir")
	}
}

// A daemon that accepts the connection and dies before answering is "not
// reachable", like one that is not there: the notice is dropped, the ADD
// goes on, and the daemon rereads the directory when it is back.
func TestDaemonGoneMidRequest(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			http.ReadRequest(bufio.NewReader(c))
			c.Close()
		}
	}()
	d := newDaemonClient(sock)
	err = d.addLocal(context.Background(), Local{IP: "10.42.1.5"})
	if !errors.Is(err, errNoDaemon) {
		t.Fatalf("POST to a daemon that dies mid-request: got %v, want errNoDaemon", err)
	}
	ln.Close()
	os.Remove(sock)
	if err := d.delLocal(context.Background(), netip.MustParseAddr("10.42.1.5")); !errors.Is(err, errNoDaemon) || !strings.Contains(err.Error(), "not reachable at "+sock) {
		t.Fatalf("DELETE without a daemon: got %v, want errNoDaemon naming the socket", err)
	}
}
