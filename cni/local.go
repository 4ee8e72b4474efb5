package cni

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/drovernet/drover/cni/ipam"
)

// The daemon keeps a list of this host's containers (POST /v1/local) and
// rebuilds it from the reservation directories after a restart, since a
// notice sent while it was down is lost (ADD goes on without it). These
// functions are that directory's read side for the daemon: they never
// create, lock for writing or change anything.

// StoreDir returns network's reservation directory under dataDir (empty:
// ipam.DefaultDataDir). It refuses what the plugin's config refuses, so a
// name from a request can never point elsewhere: a relative dataDir, or a
// network name that is not letters, digits, '_', '.', '-'.
func StoreDir(dataDir, network string) (string, error) {
	if dataDir == "" {
		dataDir = ipam.DefaultDataDir
	}
	if !filepath.IsAbs(dataDir) {
		return "", fmt.Errorf("data_dir %q is not an absolute path", dataDir)
	}
	switch {
	case network == "":
		return "", errors.New("network: missing")
	case len(network) > maxNameLen:
		return "", fmt.Errorf("network: %d characters, at most %d", len(network), maxNameLen)
	}
	if e := validNetworkName(network); e != "" {
		return "", fmt.Errorf("network %q %s", network, e)
	}
	return filepath.Join(filepath.Clean(dataDir), network), nil
}

// Networks lists the networks that have a reservation directory under
// dataDir (empty: ipam.DefaultDataDir). A dataDir that does not exist holds
// none.
func Networks(dataDir string) ([]string, error) {
	if dataDir == "" {
		dataDir = ipam.DefaultDataDir
	}
	ents, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cni data directory: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && len(e.Name()) <= maxNameLen && validNetworkName(e.Name()) == "" {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Reserved returns the attachments network's reservation directory under
// dataDir holds, in address order, as the notices ADD sends for them:
// network, container ID, interface name, address, the MAC ADD derived from
// it, DataDir and the pod. Bridge is empty: the directory does not record it.
// Reservations whose owner is unreadable are left out (GC releases them).
// A directory that does not exist holds none.
func Reserved(dataDir, network string) ([]Local, error) {
	dir, err := StoreDir(dataDir, network)
	if err != nil {
		return nil, err
	}
	s, err := ipam.OpenExisting(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rs, err := s.List()
	if err != nil {
		return nil, err
	}
	if dataDir == "" {
		dataDir = ipam.DefaultDataDir
	}
	var out []Local
	for _, r := range rs {
		if r.Unreadable || !r.Addr.Is4() {
			continue
		}
		out = append(out, Local{
			Network:      network,
			ContainerID:  r.Owner.ContainerID,
			IfName:       r.Owner.IfName,
			IP:           r.Addr.String(),
			MAC:          containerMAC(r.Addr).String(),
			DataDir:      filepath.Clean(dataDir),
			PodNamespace: r.Pod.Namespace,
			PodName:      r.Pod.Name,
			Labels:       r.Pod.Labels,
			Ports:        r.Pod.Ports,
			PrefixLen:    r.Pod.PrefixLen,
			Gateway:      r.Pod.Gateway,
			MTU:          r.Pod.MTU,
			Uplink:       r.Pod.Uplink,
		})
	}
	return out, nil
}
