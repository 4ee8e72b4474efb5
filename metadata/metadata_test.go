package metadata

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var rec = Record{Address: "192.168.50.20/24", Gateway: "192.168.50.1", MTU: 1500, Host: "h1", Network: "lan",
	Interface: "eth0", MAC: "0a:58:c0:a8:32:14", ContainerID: "c0ffee"}

func lookup(ip netip.Addr) (Record, bool) {
	if ip == netip.MustParseAddr("192.168.50.20") {
		return rec, true
	}
	return Record{}, false
}

func TestHandler(t *testing.T) {
	h := Handler(lookup, slog.New(slog.DiscardHandler))
	cases := []struct {
		method, path, from string
		code               int
		body               string // substring
	}{
		{"GET", "/v1/self", "192.168.50.20:40000", 200, `"address": "192.168.50.20/24"`},
		{"GET", "/v1/self/", "192.168.50.20:40000", 200, `"host": "h1"`},
		{"GET", "/v1/self/address", "192.168.50.20:40000", 200, "192.168.50.20/24\n"},
		{"GET", "/v1/self/mtu", "192.168.50.20:40000", 200, "1500\n"},
		{"GET", "/v1/self/pod_name", "192.168.50.20:40000", 200, "\n"},
		{"GET", "/v1/self/secret", "192.168.50.20:40000", 404, `no field "secret"`},
		{"GET", "/v1/selfish", "192.168.50.20:40000", 404, "not found"},
		{"GET", "/v1/other/192.168.50.20", "192.168.50.21:40000", 404, "not found"},
		{"GET", "/v1/self", "192.168.50.21:40000", 404, "no container on this host holds 192.168.50.21"},
		{"GET", "/v1/self", "[::ffff:192.168.50.20]:40000", 200, `"mac": "0a:58:c0:a8:32:14"`},
		{"POST", "/v1/self", "192.168.50.20:40000", 405, "read-only"},
		{"GET", "/v1/self", "garbage", 404, "no record"},
	}
	for _, tc := range cases {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.RemoteAddr = tc.from
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%s %s from %s: got %d %q, want %d containing %q", tc.method, tc.path, tc.from, w.Code, w.Body, tc.code, tc.body)
		}
	}
}

// TestListenFreebind: the listener binds the metadata address before any
// interface holds it, and serves over a real socket (loopback here).
func TestListenFreebind(t *testing.T) {
	ln, err := Listen(context.Background(), netip.MustParseAddrPort("169.254.169.250:0"))
	if err != nil {
		t.Fatalf("listen on an address no interface holds: %v", err)
	}
	ln.Close()
	ln, err = Listen(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	self := func(ip netip.Addr) (Record, bool) {
		if ip.IsLoopback() {
			return rec, true
		}
		return Record{}, false
	}
	srv := Server(Handler(self, slog.New(slog.DiscardHandler)))
	go srv.Serve(ln)
	defer srv.Close()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + ln.Addr().String() + "/v1/self")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Record
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &got); err != nil || got != rec {
		t.Errorf("got %+v (%v) from %s, want %+v", got, err, b, rec)
	}
}
