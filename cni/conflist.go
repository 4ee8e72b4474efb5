package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/version"
)

// PluginType is the plugin type the drover binary answers to: the "type"
// of its entry in a conflist and its file name in the runtime's CNI path.
const PluginType = "drover"

// ConfList is a network configuration list (CNI spec 1.1 §1, the file a
// runtime loads from its config directory) as far as ParseConfList checks
// it.
type ConfList struct {
	CNIVersion string
	// CNIVersions is the list's "cniVersions" (CNI 1.1): a libcni of 1.2
	// or later runs the highest it implements; older ones read CNIVersion.
	CNIVersions []string
	Name        string
	// Types are plugins[].type in chain order; drover among them.
	Types []string
}

// conflistKeys are the top-level keys of a network configuration list
// (CNI spec 1.1 §1; "cniVersions", "disableGC" and "loadOnlyInlinedPlugins"
// came with 1.1).
var conflistKeys = []string{"cniVersion", "cniVersions", "name", "disableCheck", "disableGC", "loadOnlyInlinedPlugins", "plugins"}

// ParseConfList checks a network configuration list before it is installed
// where a runtime reads it: the list's own keys (known, of the right JSON
// type, a cniVersion this plugin supports, a valid network name, at least
// one plugin, each with a type that names a file), and every drover entry
// exactly as ADD would parse it, with the list's name and cniVersion put in
// as the runtime does (libcni's injection). Other plugins' entries are
// checked for their type only. Errors name the field:
// `plugins[0] (drover): bridgeSubnet: 10.42.1.1/24 has host bits set ...`.
func ParseConfList(b []byte) (*ConfList, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("conflist is not a JSON object: %w", err)
	}
	if top == nil {
		return nil, errors.New("conflist is not a JSON object")
	}
	var unknown []string
	for k := range top {
		if !slices.Contains(conflistKeys, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		msg := fmt.Sprintf("unknown key %q in the conflist (known: %s)", unknown[0], strings.Join(conflistKeys, ", "))
		if slices.Contains(droverKeys, unknown[0]) || unknown[0] == "type" || unknown[0] == "ipam" {
			msg += "; plugin keys belong inside plugins[]"
		}
		return nil, errors.New(msg)
	}
	l := &ConfList{}
	if err := field(top, "cniVersion", &l.CNIVersion); err != nil {
		return nil, err
	}
	switch {
	case l.CNIVersion == "":
		return nil, errors.New("cniVersion: missing")
	case !slices.Contains(version.All.SupportedVersions(), l.CNIVersion):
		return nil, fmt.Errorf("cniVersion: %q is not a version drover supports (%s)", l.CNIVersion, strings.Join(version.All.SupportedVersions(), ", "))
	}
	if err := field(top, "cniVersions", &l.CNIVersions); err != nil {
		return nil, err
	}
	for i, v := range l.CNIVersions {
		if !slices.Contains(version.All.SupportedVersions(), v) {
			return nil, fmt.Errorf("cniVersions[%d]: %q is not a version drover supports (%s)", i, v, strings.Join(version.All.SupportedVersions(), ", "))
		}
	}
	if err := field(top, "name", &l.Name); err != nil {
		return nil, err
	}
	switch {
	case l.Name == "":
		return nil, errors.New("name: missing: the network needs a name")
	case len(l.Name) > maxNameLen:
		return nil, fmt.Errorf("name: %d characters, at most %d", len(l.Name), maxNameLen)
	case validNetworkName(l.Name) != "":
		return nil, fmt.Errorf("name: %q %s", l.Name, validNetworkName(l.Name))
	}
	for _, k := range []string{"disableCheck", "disableGC", "loadOnlyInlinedPlugins"} {
		var v bool
		if err := field(top, k, &v); err != nil {
			return nil, err
		}
	}
	var plugins []map[string]json.RawMessage
	if err := field(top, "plugins", &plugins); err != nil {
		return nil, err
	}
	if len(plugins) == 0 {
		return nil, errors.New("plugins: missing or empty: a conflist needs at least the drover plugin")
	}
	for i, p := range plugins {
		at := fmt.Sprintf("plugins[%d]", i)
		if p == nil {
			return nil, fmt.Errorf("%s: want an object, got null", at)
		}
		var typ string
		if err := field(p, "type", &typ); err != nil {
			return nil, fmt.Errorf("%s.%w", at, err)
		}
		switch {
		case typ == "":
			return nil, fmt.Errorf("%s.type: missing", at)
		case typ == "." || typ == ".." || strings.ContainsAny(typ, `/\`) || strings.TrimSpace(typ) != typ:
			return nil, fmt.Errorf("%s.type: %q is not a plugin file name (the runtime looks it up in its CNI path)", at, typ)
		}
		l.Types = append(l.Types, typ)
		if typ != PluginType {
			continue
		}
		// What the runtime hands the plugin on stdin (libcni's
		// buildOneConfig): the entry with the list's name and version.
		conf := make(map[string]json.RawMessage, len(p)+2)
		for k, v := range p {
			conf[k] = v
		}
		conf["name"], _ = json.Marshal(l.Name)
		conf["cniVersion"], _ = json.Marshal(l.CNIVersion)
		raw, err := json.Marshal(conf)
		if err != nil {
			return nil, fmt.Errorf("%s (drover): %w", at, err)
		}
		if _, e := parseConfig(raw); e != nil {
			msg := e.Msg
			if e.Details != "" {
				msg += " (" + e.Details + ")"
			}
			return nil, fmt.Errorf("%s (drover): %s", at, msg)
		}
	}
	if !slices.Contains(l.Types, PluginType) {
		return nil, fmt.Errorf("plugins: no plugin of type %q (types: %s)", PluginType, strings.Join(l.Types, ", "))
	}
	return l, nil
}

// field decodes obj[key] into v when present (null counts as absent),
// naming the key and the JSON type wanted when it does not fit.
func field(obj map[string]json.RawMessage, key string, v any) error {
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s: got a JSON %s, want %s", key, te.Value, wantKind(v))
		}
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

func wantKind(v any) string {
	switch v.(type) {
	case *string:
		return "a string"
	case *bool:
		return "true or false"
	case *[]string:
		return "a list of strings"
	case *[]map[string]json.RawMessage:
		return "a list of objects"
	}
	return fmt.Sprintf("%T", v)
}
