package kernelpeer

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

// The testdata files are real `status` output of the scripts: UML 6.1.176,
// iproute2 6.1 on the host side.

func TestParseESPStatus(t *testing.T) {
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	tests := []struct {
		file  string
		sas   []XfrmSA
		stats map[string]uint64
	}{
		{
			// gcm128 with ESN, kernel <-> kernel after a 100 kB TCP transfer.
			file: "status-esp-esn.txt",
			sas: []XfrmSA{
				{Src: a1, Dst: a2, SPI: 0xa01, ESN: true, Bytes: 104064, Packets: 78, OSeq: 0x4e},
				{Src: a2, Dst: a1, SPI: 0xb01, ESN: true, Bytes: 2776, Packets: 48, Seq: 0x30},
			},
			stats: map[string]uint64{},
		},
		{
			// chacha, inbound SA keyed with a wrong salt: 3 ICV failures.
			file: "status-esp-chacha-badkey.txt",
			sas: []XfrmSA{
				{Src: a2, Dst: a1, SPI: 0xb01, Bytes: 180, Packets: 3, OSeq: 3},
				{Src: a1, Dst: a2, SPI: 0xa01, IntegrityFailed: 3},
			},
			stats: map[string]uint64{"XfrmInStateProtoError": 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			st, err := ParseESPStatus(string(raw))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(st.SAs, tt.sas) {
				t.Errorf("SAs:\ngot  %+v\nwant %+v", st.SAs, tt.sas)
			}
			if !reflect.DeepEqual(st.XfrmStat, tt.stats) {
				t.Errorf("xfrm_stat: got %v, want %v", st.XfrmStat, tt.stats)
			}
			if !reflect.DeepEqual(st.XfrmInErrors(), tt.stats) {
				t.Errorf("XfrmInErrors: got %v, want %v", st.XfrmInErrors(), tt.stats)
			}
			if sa, ok := st.SA(tt.sas[1].SPI); !ok || sa != tt.sas[1] {
				t.Errorf("SA(%#x): got %+v, %v; want %+v", tt.sas[1].SPI, sa, ok, tt.sas[1])
			}
			if _, ok := st.SA(0x1234); ok {
				t.Errorf("SA(0x1234): found a state that does not exist")
			}
		})
	}
}

func TestParseESPStatusErrors(t *testing.T) {
	for _, raw := range []string{
		"src 192.0.2.1 dst 192.0.2.2\n\tmode tunnel\n",                                      // state without SPI
		"src 192.0.2.1 dst 192.0.2.2\n\tproto esp spi 0x1ffffffff(1) reqid 1 mode tunnel\n", // SPI > 32 bits
	} {
		if st, err := ParseESPStatus(raw); err == nil {
			t.Errorf("ParseESPStatus(%q): got %+v, want an error", raw, st.SAs)
		}
	}
	st, err := ParseESPStatus("\n\nXfrmInNoStates          \t7\n")
	if err != nil || len(st.SAs) != 0 || st.XfrmStat["XfrmInNoStates"] != 7 {
		t.Errorf("no states: got %+v, %v; want no SAs and XfrmInNoStates 7", st, err)
	}
}

func TestParseVXLANStatus(t *testing.T) {
	raw, err := os.ReadFile("testdata/status-vxlan.txt")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseVXLANStatus(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if want := (LinkCounters{Bytes: 348, Packets: 7}); st.RX != want {
		t.Errorf("RX: got %+v, want %+v", st.RX, want)
	}
	if want := (LinkCounters{Bytes: 20452, Packets: 9}); st.TX != want {
		t.Errorf("TX: got %+v, want %+v", st.TX, want)
	}
	wantFDB := []string{"02:42:0a:2a:02:01 dst 192.0.2.2 self permanent", "00:00:00:00:00:00 dst 192.0.2.2 self permanent"}
	if !reflect.DeepEqual(st.FDB, wantFDB) {
		t.Errorf("FDB: got %q, want %q", st.FDB, wantFDB)
	}
	n, ok := st.Neighbor(netip.MustParseAddr("10.42.2.1"))
	if !ok || n.MAC.String() != "02:42:0a:2a:02:01" || n.State != "REACHABLE" {
		t.Errorf("neighbour 10.42.2.1: got %+v, %v; want 02:42:0a:2a:02:01 REACHABLE", n, ok)
	}
	st, err = ParseVXLANStatus("--- neigh\n10.42.1.1  FAILED\n")
	if err != nil || len(st.Neighbors) != 1 || st.Neighbors[0].MAC != nil || st.Neighbors[0].State != "FAILED" {
		t.Errorf("unresolved neighbour: got %+v, %v; want no MAC, FAILED", st, err)
	}
}

func TestESPOptionsArgs(t *testing.T) {
	key := make([]byte, 20)
	o := ESPOptions{
		Name: "t1", AEAD: GCM128, SPIOut: 0xb01, SPIIn: 0x100, KeyOut: key,
		LocalInner: netip.MustParsePrefix("10.0.2.0/24"), ESN: true, ReplayWindow: 128, AttachNS: "drv-x",
	}
	got, err := o.args()
	if err != nil {
		t.Fatal(err)
	}
	want := "up --name t1 --aead gcm128 --spi-out 0x00000b01 --spi-in 0x00000100 --key-out " + strings.Repeat("00", 20) +
		" --local-inner 10.0.2.0/24 --replay-window 128 --esn --attach-ns drv-x"
	if strings.Join(got, " ") != want {
		t.Errorf("args:\ngot  %s\nwant %s", strings.Join(got, " "), want)
	}
	for _, bad := range []ESPOptions{
		{Name: "Bad"}, {Name: "toolongname"}, {AEAD: "gcm192"},
		{AEAD: ChaCha, KeyIn: make([]byte, 20)}, // chacha needs 36 bytes
	} {
		if a, err := bad.args(); err == nil {
			t.Errorf("%+v: got args %q, want an error", bad, a)
		}
	}
	if a, err := (&ESPOptions{ReplayWindow: -1}).args(); err != nil || !strings.Contains(strings.Join(a, " "), "--replay-window 0") {
		t.Errorf("ReplayWindow -1: got %q, %v; want --replay-window 0", a, err)
	}
}

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n := UniqueName("abc")
		if !nameRE.MatchString(n) {
			t.Fatalf("UniqueName: got %q, want [a-z0-9]{1,8}", n)
		}
		if seen[n] {
			t.Fatalf("UniqueName: %q twice", n)
		}
		seen[n] = true
	}
}

func TestRunBaseHiddenInUML(t *testing.T) {
	for _, base := range []string{"/tmp", "/tmp/x", "/run/user", "/var/tmp/a b"} {
		if rr, err := newRunRoot(base, nil, "x.sh"); err == nil {
			rr.remove()
			t.Errorf("newRunRoot(%q): got no error, want one (UML cannot see it)", base)
		}
	}
}

func TestMissingTools(t *testing.T) {
	got := missing([]tool{{"sh", "dash"}, {"drv-no-such-tool", "drv-pkg"}})
	if want := []string{"drv-no-such-tool (apt-get install drv-pkg)"}; !reflect.DeepEqual(got, want) {
		t.Errorf("missing: got %q, want %q", got, want)
	}
}
