package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/router"
)

// controlClient is the one client of the daemon's control socket.
func controlClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
}

func controlErr(sock string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no daemon: control socket %s does not exist (is drover running? --socket)", sock)
	}
	return fmt.Errorf("control socket %s: %w", sock, err)
}

// post POSTs to path on the daemon's control socket; an answer other than
// 2xx is an error carrying the daemon's message.
func post(sock, path string) error {
	resp, err := controlClient(sock).Post("http://drover"+path, "text/plain", nil)
	if err != nil {
		return controlErr(sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s", strings.TrimSpace(string(msg)))
	}
	return nil
}

// fetch GETs path from the daemon's control socket into v.
func fetch(sock, path string, v any) error {
	resp, err := controlClient(sock).Get("http://drover" + path)
	if err != nil {
		return controlErr(sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The daemon's own refusals carry a message; a route it does
		// not serve (an older daemon, a feature off) is the mux's 404.
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if m := strings.TrimSpace(string(msg)); m != "" && m != "404 page not found" {
			return fmt.Errorf("%s", m)
		}
		return fmt.Errorf("control socket %s: GET %s: %s (not served by this daemon: feature off or an older version)", sock, path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("control socket %s: bad answer: %w", sock, err)
	}
	return nil
}

// viewFlags are the flags every view command shares.
func viewFlags(name string, args []string) (out, sock string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	o := fs.String("o", "table", "output: table or json")
	s := fs.String("socket", config.DefaultControlSocket, "the daemon's control socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", "", err
		}
		return "", "", &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return "", "", usageErr("%s: unexpected argument %q", name, fs.Arg(0))
	}
	if *o != "table" && *o != "json" {
		return "", "", usageErr("%s: -o %q: want table or json", name, *o)
	}
	return *o, *s, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdStatus(args []string, stdout io.Writer) error {
	out, sock, err := viewFlags("status", args)
	if err != nil {
		return err
	}
	var st router.Status
	if err := fetch(sock, "/v1/status", &st); err != nil {
		return err
	}
	if out == "json" {
		return writeJSON(stdout, st)
	}
	printStatus(stdout, st)
	// Containers the CNI plugin attached on this host (GET /v1/local).
	var local []json.RawMessage
	if err := fetch(sock, "/v1/local", &local); err == nil {
		fmt.Fprintf(stdout, "\nlocal containers: %d\n", len(local))
	}
	// Cluster mode: joined, or alone and retrying (GET /v1/cluster).
	var cv gossip.View
	if err := fetch(sock, "/v1/cluster", &cv); err == nil && cv.Epoch > 0 {
		fmt.Fprintln(stdout, clusterLine(cv))
	}
	return nil
}

// clusterLine says whether this host is in a cluster: "cluster: joined, N
// other members alive" or "cluster: alone since T, retrying joins".
func clusterLine(cv gossip.View) string {
	if cv.AloneSince != "" {
		return "cluster: alone since " + cv.AloneSince + ", retrying joins through its seeds and every member seen"
	}
	alive := 0
	for _, m := range cv.Members {
		if m.State == "alive" || m.State == "suspect" {
			alive++
		}
	}
	if alive > 0 {
		alive-- // the view lists this host too
	}
	return fmt.Sprintf("cluster: joined, %d other members alive", alive)
}

// cmdPeers shows the cluster's members next to the router's peers: state,
// block, routed prefixes, SAs with their age and counters.
func cmdPeers(args []string, stdout io.Writer) error {
	out, sock, err := viewFlags("peers", args)
	if err != nil {
		return err
	}
	var cv gossip.View
	var st router.Status
	if err := fetch(sock, "/v1/cluster", &cv); err != nil {
		return err
	}
	if err := fetch(sock, "/v1/status", &st); err != nil {
		return err
	}
	if out == "json" {
		return writeJSON(stdout, struct {
			Members []gossip.MemberView `json:"members"`
			Peers   []router.PeerStatus `json:"peers"`
			BGP     *router.BGPStatus   `json:"bgp,omitempty"`
		}{cv.Members, st.Peers, st.BGP})
	}
	byName := map[string]router.PeerStatus{}
	for _, p := range st.Peers {
		byName[p.Name] = p
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tUNDERLAY\tBLOCK\tROUTED\tEPOCH\tSPI OUT\tSPI IN\tSA AGE\tTX PKTS\tRX PKTS\tNOTE")
	listed := map[string]bool{}
	row := func(name, state, underlay, block string, routed []string, epoch uint32, note string) {
		p, ok := byName[name]
		spiOut, spiIn, age, tx, rx := "-", "-", "-", "-", "-"
		if ok {
			tx, rx = fmt.Sprint(p.TxPackets), fmt.Sprint(p.RxPackets)
			if p.SAOut != nil {
				spiOut = fmt.Sprintf("%#08x", p.SAOut.SPI)
				age = (time.Duration(p.SAOut.AgeSeconds) * time.Second).String()
			}
			if p.SAIn != nil {
				spiIn = fmt.Sprintf("%#08x", p.SAIn.SPI)
			}
		}
		if block == "" {
			block = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", name, state, underlay, block, routed, epoch, spiOut, spiIn, age, tx, rx, note)
		listed[name] = true
	}
	for _, m := range cv.Members {
		note := m.Note
		if len(m.Refused) > 0 {
			if note != "" {
				note += "; "
			}
			note += "refused " + strings.Join(m.Refused, ", ")
		}
		row(m.Name, m.State, m.Underlay, m.Block, m.Routed, m.Epoch, note)
	}
	for _, p := range st.Peers {
		if !listed[p.Name] {
			row(p.Name, "static", p.Underlay, "", p.Prefixes, 0, "")
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if b := st.BGP; b != nil {
		printBGP(stdout, b)
	}
	return nil
}

// printBGP renders the BGP speaker's sessions for drover peers.
func printBGP(w io.Writer, b *router.BGPStatus) {
	fmt.Fprintf(w, "\nbgp: AS %d, router ID %s, announcing %v\n", b.AS, b.RouterID, b.Announced)
	if b.Error != "" {
		fmt.Fprintf(w, "bgp sessions unreadable: %s\n", b.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NEIGHBOR\tAS\tSTATE\tUPTIME\tSENT\tRECEIVED\tLAST ERROR")
	for _, n := range b.Neighbors {
		up := "-"
		if n.State == "established" {
			up = (time.Duration(n.UptimeSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", n.Address, n.AS, n.State, up, n.PrefixesSent, n.PrefixesReceived, n.LastError)
	}
	tw.Flush()
}

// cmdRoutes lists the routes the daemon installed: through its TUN (path
// esp or vxlan) or directly via a member's underlay address.
func cmdRoutes(args []string, stdout io.Writer) error {
	out, sock, err := viewFlags("routes", args)
	if err != nil {
		return err
	}
	var cv gossip.View
	if err := fetch(sock, "/v1/cluster", &cv); err != nil {
		return err
	}
	if out == "json" {
		return writeJSON(stdout, cv.Routes)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tPEER\tPATH\tVIA\tSRC\tNOTE")
	for _, r := range cv.Routes {
		note := r.Note
		if r.PathNote != "" {
			note = strings.TrimPrefix(note+"; not direct: "+r.PathNote, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Prefix, r.Peer, cmp.Or(r.Path, "-"), cmp.Or(r.Via, "-"), r.Src, note)
	}
	return tw.Flush()
}

// cmdForget unpins a node name's identity key on this host, so that the next
// key seen under the name is trusted (a reinstalled host; docs/security.md).
func cmdForget(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("forget", flag.ContinueOnError)
	sock := fs.String("socket", config.DefaultControlSocket, "the daemon's control socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() != 1 {
		return usageErr("forget: usage: drover forget [--socket PATH] NODE")
	}
	name := fs.Arg(0)
	if err := post(*sock, "/v1/identities/forget?name="+url.QueryEscape(name)); err != nil {
		return fmt.Errorf("forget %s: %w", name, err)
	}
	_, err := fmt.Fprintf(stdout, "%s: identity key forgotten; the next one it shows is pinned\n", name)
	return err
}
