package gossip

import (
	"fmt"
	"net/netip"
	"strings"
)

// View is the daemon's cluster view, served as GET /v1/cluster and shown by
// `drover peers` and `drover routes`. Field names are part of the JSON API:
// only add fields.
type View struct {
	Members []MemberView `json:"members"`
	Routes  []RouteView  `json:"routes"`
	Block   string       `json:"block,omitempty"`
	Epoch   uint32       `json:"epoch"`
	// AloneSince is set (RFC 3339) while no other member is alive: this
	// host is retrying its joins (Config.JoinRetryMin..Max).
	AloneSince string `json:"alone_since,omitempty"`
	// BlockNote says why this host has no block, when it has none.
	BlockNote string `json:"block_note,omitempty"`
}

// MemberView is one gossip member as a host sees it.
type MemberView struct {
	Name     string   `json:"name"`
	State    string   `json:"state"`
	Underlay string   `json:"underlay"`
	Block    string   `json:"block,omitempty"`
	Routed   []string `json:"routed"`
	Epoch    uint32   `json:"epoch"`
	Version  string   `json:"version"`
	Note     string   `json:"note,omitempty"`
	// Refused lists the member's claims this host does not believe, each
	// "prefix: reason" (docs/security.md).
	Refused []string `json:"refused,omitempty"`
}

// RouteView is a route the agent installed: through the TUN device, or
// directly via a member's underlay address.
type RouteView struct {
	Prefix string `json:"prefix"`
	Peer   string `json:"peer"`
	Src    string `json:"src,omitempty"`
	// Path is how the prefix is reached: "direct" (a kernel route via
	// Via, no encapsulation), "esp" or "vxlan" (through the TUN).
	Path string `json:"path,omitempty"`
	Via  string `json:"via,omitempty"`
	// PathNote says, with direct routing on, why the path is not direct.
	PathNote string `json:"path_note,omitempty"`
	// Note says why the route is not installed ("" when it is).
	Note string `json:"note,omitempty"`
}

// Member returns the named member, or nil.
func (v *View) Member(name string) *MemberView {
	for i := range v.Members {
		if v.Members[i].Name == name {
			return &v.Members[i]
		}
	}
	return nil
}

// RouteTo returns the route for prefix, or nil.
func (v *View) RouteTo(prefix netip.Prefix) *RouteView {
	for i := range v.Routes {
		if v.Routes[i].Prefix == prefix.String() {
			return &v.Routes[i]
		}
	}
	return nil
}

// String is a compact one-line rendering for logs: block, epoch, members
// (name:state:block) and routes (prefix→peer).
func (v *View) String() string {
	var ms, rs []string
	for _, m := range v.Members {
		ms = append(ms, fmt.Sprintf("%s:%s:%s", m.Name, m.State, m.Block))
	}
	for _, r := range v.Routes {
		rs = append(rs, r.Prefix+"→"+r.Peer)
	}
	return fmt.Sprintf("block %s epoch %d members [%s] routes [%s]", v.Block, v.Epoch, strings.Join(ms, " "), strings.Join(rs, " "))
}
