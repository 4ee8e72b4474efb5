package lab

import "github.com/drovernet/drover/internal/labns"

// Prefix starts the name of everything the lab creates, so leftovers can be
// recognised and swept.
const Prefix = labns.Prefix

// NetNS is a named network namespace (/run/netns/NAME).
type NetNS = labns.NetNS

// UniqueName returns Prefix + tag + a suffix unique to this process.
func UniqueName(tag string) string { return labns.UniqueName(tag) }

// CreateNetNS creates the named namespace with loopback up.
func CreateNetNS(name string) (*NetNS, error) { return labns.Create(name) }

// Sweep deletes the leftover namespaces whose names start with Prefix+tag.
func Sweep(tag string) []string { return labns.Sweep(tag) }
