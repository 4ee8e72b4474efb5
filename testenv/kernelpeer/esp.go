package kernelpeer

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AEAD names the ESP AEAD as the script's --aead flag does.
type AEAD string

// The three AEADs drover and the kernel share.
const (
	GCM128 AEAD = "gcm128" // AES-128-GCM, RFC 4106, xfrm rfc4106(gcm(aes))
	GCM256 AEAD = "gcm256" // AES-256-GCM, RFC 4106
	ChaCha AEAD = "chacha" // ChaCha20-Poly1305, RFC 7634, xfrm rfc7539esp(chacha20,poly1305)
)

// AEADs lists every AEAD, for tests that loop over them.
var AEADs = []AEAD{GCM128, GCM256, ChaCha}

// Cipher is drover's configuration name for the AEAD (config.Config.Cipher).
func (a AEAD) Cipher() string {
	switch a {
	case GCM128:
		return "aes-128-gcm"
	case GCM256:
		return "aes-256-gcm"
	case ChaCha:
		return "chacha20-poly1305"
	}
	return ""
}

// KeyLen is the length of the key material: the AEAD key followed by the
// 4-byte salt (RFC 4106 §8.1, RFC 7634 §4), as xfrm and drover take it.
func (a AEAD) KeyLen() int {
	switch a {
	case GCM128:
		return 16 + 4
	case GCM256, ChaCha:
		return 32 + 4
	}
	return 0
}

// ESPOptions are the `up` flags of kernel-esp-peer.sh. "Out" and "In" are
// the kernel's directions: drover's outbound SA is the kernel's SPIIn/KeyIn.
// Zero values keep the script's defaults.
type ESPOptions struct {
	// Name is the peer name, [a-z0-9]{1,8}; it names the namespaces drv-NAME
	// (the wire) and drv-NAME-lan. Default UniqueName("e").
	Name string
	// AEAD: GCM128 (default), GCM256 or ChaCha.
	AEAD AEAD
	// SPIOut is the SPI of the SA kernel → remote. Default 0x00000b01.
	SPIOut uint32
	// SPIIn is the SPI of the SA remote → kernel. Default 0x00000a01.
	SPIIn uint32
	// KeyOut and KeyIn are the key material (key ‖ 4-byte salt) of the two
	// SAs. Default: the script's patterned test keys (`keys`).
	KeyOut, KeyIn []byte
	// Local is the kernel's underlay address (default 192.0.2.2), Remote the
	// router's (default 192.0.2.1), both in a /PrefixLen (default 24).
	Local, Remote netip.Addr
	PrefixLen     int
	// LocalInner is the subnet behind the kernel (default 10.0.2.0/24): its
	// first host is LAN_GW (the endpoint itself), the second LAN_HOST.
	// RemoteInner is the subnet behind the router (default 10.0.1.0/24); the
	// kernel's policies only pass inner packets between the two.
	LocalInner, RemoteInner netip.Prefix
	// LocalInner6 and RemoteInner6 optionally add IPv6 inner subnets (the
	// prefix must end in ::, e.g. fd00:2::/64).
	LocalInner6, RemoteInner6 netip.Prefix
	// SPort is the kernel's UDP port, DPort the router's. Default 4500 (RFC 3948).
	SPort, DPort uint16
	// ReplayWindow is the anti-replay window of both SAs. 0 keeps the
	// script's default (32); negative disables anti-replay (window 0).
	ReplayWindow int
	// ESN enables 64-bit extended sequence numbers (RFC 4303 §2.2.1).
	ESN bool
	// MTU is the underlay MTU. Default 1500.
	MTU int
	// AttachNS is the router's namespace: a veth AttachIf (default ul0) with
	// Remote/PrefixLen is created there, on the kernel's L2 segment.
	AttachNS, AttachIf string
	// SwitchNS puts the endpoint on bridge br0 of this namespace instead of
	// its own wire namespace (several peers on one segment).
	SwitchNS string
	// Backend is "uml", "netns" or "" (auto: netns when this kernel can do
	// ESP, else uml).
	Backend string
	// RunBase is where the run directory is created. Default DefaultRunBase.
	RunBase string
	// ExtraArgs are passed to `up` verbatim (e.g. "--oseq", "0xfffffff0").
	ExtraArgs []string
}

func (o *ESPOptions) args() ([]string, error) {
	if o.Name == "" {
		o.Name = UniqueName("e")
	}
	if !nameRE.MatchString(o.Name) {
		return nil, fmt.Errorf("kernelpeer: peer name %q must match [a-z0-9]{1,8}", o.Name)
	}
	if o.AEAD == "" {
		o.AEAD = GCM128
	}
	if o.AEAD.KeyLen() == 0 {
		return nil, fmt.Errorf("kernelpeer: unknown AEAD %q (gcm128, gcm256, chacha)", o.AEAD)
	}
	a := []string{"up", "--name", o.Name, "--aead", string(o.AEAD)}
	if o.SPIOut != 0 {
		a = append(a, "--spi-out", fmt.Sprintf("0x%08x", o.SPIOut))
	}
	if o.SPIIn != 0 {
		a = append(a, "--spi-in", fmt.Sprintf("0x%08x", o.SPIIn))
	}
	for _, k := range []struct {
		flag string
		key  []byte
	}{{"--key-out", o.KeyOut}, {"--key-in", o.KeyIn}} {
		if k.key == nil {
			continue
		}
		if len(k.key) != o.AEAD.KeyLen() {
			return nil, fmt.Errorf("kernelpeer: %s: %d bytes, %s needs %d (key then 4-byte salt)", k.flag, len(k.key), o.AEAD, o.AEAD.KeyLen())
		}
		a = append(a, k.flag, hex.EncodeToString(k.key))
	}
	a = appendAddr(a, "--local", o.Local)
	a = appendAddr(a, "--remote", o.Remote)
	if o.PrefixLen != 0 {
		a = append(a, "--plen", strconv.Itoa(o.PrefixLen))
	}
	a = appendPrefix(a, "--local-inner", o.LocalInner)
	a = appendPrefix(a, "--remote-inner", o.RemoteInner)
	a = appendPrefix(a, "--local-inner6", o.LocalInner6)
	a = appendPrefix(a, "--remote-inner6", o.RemoteInner6)
	if o.SPort != 0 {
		a = append(a, "--sport", strconv.Itoa(int(o.SPort)))
	}
	if o.DPort != 0 {
		a = append(a, "--dport", strconv.Itoa(int(o.DPort)))
	}
	switch {
	case o.ReplayWindow > 0:
		a = append(a, "--replay-window", strconv.Itoa(o.ReplayWindow))
	case o.ReplayWindow < 0:
		a = append(a, "--replay-window", "0")
	}
	if o.ESN {
		a = append(a, "--esn")
	}
	if o.MTU != 0 {
		a = append(a, "--mtu", strconv.Itoa(o.MTU))
	}
	a = appendStr(a, "--attach-ns", o.AttachNS)
	a = appendStr(a, "--attach-if", o.AttachIf)
	a = appendStr(a, "--switch-ns", o.SwitchNS)
	a = appendStr(a, "--backend", o.Backend)
	return append(a, o.ExtraArgs...), nil
}

func appendAddr(a []string, flag string, v netip.Addr) []string {
	if v.IsValid() {
		a = append(a, flag, v.String())
	}
	return a
}

func appendPrefix(a []string, flag string, v netip.Prefix) []string {
	if v.IsValid() {
		a = append(a, flag, v.String())
	}
	return a
}

func appendStr(a []string, flag, v string) []string {
	if v != "" {
		a = append(a, flag, v)
	}
	return a
}

// ESPPeer is a running kernel ESP endpoint. Its fields are what `up`
// printed, so they hold the defaults the script filled in.
type ESPPeer struct {
	Name    string
	Backend string // "uml" or "netns"
	WireNS  string // namespace holding bridge br0, the underlay segment
	AEAD    AEAD
	// Local is the kernel's underlay address, Remote the router's.
	Local, Remote netip.Addr
	// LANGW is the endpoint's own inner address, LANHost the host in the LAN
	// namespace (default route via LANGW).
	LANGW, LANHost netip.Addr
	SPIOut, SPIIn  uint32 // kernel → remote, remote → kernel
	KeyOut, KeyIn  []byte // key ‖ salt
	SPort, DPort   uint16
	ESN            bool
	RunDir         string        // the script's run directory for this peer (logs: endpoint.log, console.log)
	Boot           time.Duration // how long `up` took

	lanNS string
	rr    *runRoot

	closeOnce sync.Once
	closeErr  error
}

// StartESP runs `kernel-esp-peer.sh up` and returns once the endpoint has
// its SAs and policies. On failure nothing is left behind.
func StartESP(ctx context.Context, o ESPOptions) (*ESPPeer, error) {
	args, err := o.args()
	if err != nil {
		return nil, err
	}
	rr, err := newRunRoot(o.RunBase, espScript, espScriptName)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	out, err := rr.run(ctx, upTimeout, args...)
	if err != nil {
		// The script tears down after its own failures; not when it was
		// killed by the timeout, so run down regardless.
		_, _ = rr.run(context.Background(), downTimeout, "down", "--name", o.Name)
		rr.remove()
		return nil, fmt.Errorf("kernelpeer: start ESP peer %s: %w", o.Name, err)
	}
	p := &ESPPeer{Name: o.Name, ESN: o.ESN, Boot: time.Since(start), rr: rr}
	if err := p.parse(parseKV(out)); err != nil {
		p.Close()
		return nil, fmt.Errorf("kernelpeer: ESP peer %s: %w\n%s", o.Name, err, out)
	}
	return p, nil
}

func (p *ESPPeer) parse(kv map[string]string) error {
	var ep errParse
	if kv["PEER"] != p.Name {
		return fmt.Errorf("up printed PEER=%q, want %q", kv["PEER"], p.Name)
	}
	p.Backend = ep.str(kv, "BACKEND")
	p.WireNS = ep.str(kv, "WIRE_NS")
	p.lanNS = ep.str(kv, "LAN_NS")
	p.AEAD = AEAD(ep.str(kv, "AEAD"))
	p.Local = ep.addr(kv, "LOCAL")
	p.Remote = ep.addr(kv, "REMOTE")
	p.LANGW = ep.addr(kv, "LAN_GW")
	p.LANHost = ep.addr(kv, "LAN_HOST")
	p.SPIOut = uint32(ep.uint(kv, "SPI_OUT", 32))
	p.SPIIn = uint32(ep.uint(kv, "SPI_IN", 32))
	p.KeyOut = ep.hex(kv, "KEY_OUT")
	p.KeyIn = ep.hex(kv, "KEY_IN")
	p.SPort = uint16(ep.uint(kv, "SPORT", 16))
	p.DPort = uint16(ep.uint(kv, "DPORT", 16))
	p.RunDir = ep.str(kv, "RUN")
	return ep.err
}

// errParse collects the first error of a series of KEY=VALUE conversions.
type errParse struct{ err error }

func (e *errParse) fail(k, v, what string) {
	if e.err == nil {
		e.err = fmt.Errorf("up printed %s=%q: %s", k, v, what)
	}
}

func (e *errParse) str(kv map[string]string, k string) string {
	v, ok := kv[k]
	if !ok || v == "" {
		e.fail(k, v, "missing")
	}
	return v
}

func (e *errParse) addr(kv map[string]string, k string) netip.Addr {
	v := e.str(kv, k)
	a, err := netip.ParseAddr(v)
	if err != nil && v != "" {
		e.fail(k, v, "not an IP address")
	}
	return a
}

func (e *errParse) uint(kv map[string]string, k string, bits int) uint64 {
	v := e.str(kv, k)
	n, err := strconv.ParseUint(v, 0, bits)
	if err != nil && v != "" {
		e.fail(k, v, "not a number")
	}
	return n
}

func (e *errParse) hex(kv map[string]string, k string) []byte {
	v := e.str(kv, k)
	b, err := hex.DecodeString(strings.TrimPrefix(v, "0x"))
	if err != nil && v != "" {
		e.fail(k, v, "not hex")
	}
	return b
}

// LANNS is the LAN namespace (drv-NAME-lan): an ordinary namespace of this
// host, holding LANHost. Run Go code there with DoInNetNS or p.LANDo.
func (p *ESPPeer) LANNS() string { return p.lanNS }

// LANDo runs fn on a thread inside the LAN namespace (see DoInNetNS).
func (p *ESPPeer) LANDo(fn func() error) error { return DoInNetNS(p.lanNS, fn) }

// Exec runs a command on the kernel endpoint (inside UML) and returns its
// combined output. One argument is a shell command line; several are an
// argv. A non-zero exit is an error carrying the output.
func (p *ESPPeer) Exec(args ...string) (string, error) {
	out, err := p.rr.run(context.Background(), cmdTimeout, append([]string{"exec", "--name", p.Name, "--"}, args...)...)
	return string(out), err
}

// Status reads the endpoint's xfrm state (`ip -s xfrm state`), policies and
// the non-zero /proc/net/xfrm_stat counters.
func (p *ESPPeer) Status() (*ESPStatus, error) {
	out, err := p.rr.run(context.Background(), cmdTimeout, "status", "--name", p.Name)
	if err != nil {
		return nil, err
	}
	return ParseESPStatus(string(out))
}

// Capture starts tcpdump on the underlay bridge (in WireNS), writing a pcap
// to file; filter is an optional tcpdump expression. StopCapture ends it;
// Close does too.
func (p *ESPPeer) Capture(file, filter string) error {
	args := []string{"capture", "--name", p.Name, "--out", file}
	if filter != "" {
		args = append(args, "--filter", filter)
	}
	_, err := p.rr.run(context.Background(), cmdTimeout, args...)
	return err
}

// StopCapture stops the capture Capture started (no-op if none runs).
func (p *ESPPeer) StopCapture() error {
	_, err := p.rr.run(context.Background(), cmdTimeout, "capture", "--name", p.Name, "--stop")
	return err
}

// Logs returns the tails of the endpoint's log (UML init: module loading,
// configuration) and of the UML console, for failure reports.
func (p *ESPPeer) Logs(n int) string {
	var b strings.Builder
	for _, f := range []string{"endpoint.log", "console.log", "encap-socket.log"} {
		fmt.Fprintf(&b, "--- %s\n%s\n", f, tail(readFile(p.RunDir+"/"+f), n))
	}
	return b.String()
}

// Close runs `down`: powers UML off (killing it if it does not stop),
// deletes the peer's namespaces and its veth in AttachNS, and removes the run
// directory. Safe to call more than once.
func (p *ESPPeer) Close() error {
	p.closeOnce.Do(func() {
		_, p.closeErr = p.rr.run(context.Background(), downTimeout, "down", "--name", p.Name)
		if err := p.rr.remove(); err != nil && p.closeErr == nil {
			p.closeErr = err
		}
	})
	return p.closeErr
}
