package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// Set is what a policy file holds: policies and namespaces (their labels,
// for namespaceSelector; a namespace not listed has only its name label).
type Set struct {
	Policies   []*Policy
	Namespaces []Namespace
}

// namespaceDoc is a v1 Namespace as a policy file may carry it.
type namespaceDoc struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
}

// Parse reads a policy file: YAML documents separated by "---", each a
// networking.k8s.io/v1 NetworkPolicy or a v1 Namespace — the same objects
// kubectl applies. Unknown fields are errors (a misspelt "ingres" would
// otherwise silently allow everything); every error names the document and
// the field. A policy without a namespace is in defaultNS.
func Parse(data []byte, defaultNS string) (*Set, error) {
	var (
		set  Set
		errs []error
		seen = map[Ref]int{}
		nss  = map[string]int{}
	)
	// Two passes over the same bytes: the first reads each document's
	// apiVersion and kind, the second decodes it strictly into its type,
	// so that errors carry the line numbers of the file.
	type head struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		empty      bool
	}
	var heads []head
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for doc := 1; ; doc++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The decoder cannot resynchronise after a syntax error.
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		var h head
		if len(node.Content) == 0 || (node.Content[0].Kind == yaml.ScalarNode && node.Content[0].Tag == "!!null") {
			h.empty = true // an empty document ("---" at the end)
		} else if err := node.Decode(&h); err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		heads = append(heads, h)
	}
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	for i, h := range heads {
		doc := i + 1
		switch {
		case h.empty:
			var skip yaml.Node
			_ = dec.Decode(&skip)
		case h.Kind == "NetworkPolicy" && h.APIVersion == "networking.k8s.io/v1":
			var np NetworkPolicy
			if err := dec.Decode(&np); err != nil {
				errs = append(errs, fmt.Errorf("document %d (NetworkPolicy): %w", doc, err))
				continue
			}
			if np.Metadata.Namespace == "" {
				np.Metadata.Namespace = defaultNS
			}
			p, err := Compile(&np)
			if err != nil {
				errs = append(errs, fmt.Errorf("document %d: %w", doc, err))
				continue
			}
			if d, dup := seen[p.Ref]; dup {
				errs = append(errs, fmt.Errorf("document %d: policy %s: already defined in document %d", doc, p.Ref, d))
				continue
			}
			seen[p.Ref] = doc
			set.Policies = append(set.Policies, p)
		case h.Kind == "Namespace" && h.APIVersion == "v1":
			var ns namespaceDoc
			if err := dec.Decode(&ns); err != nil {
				errs = append(errs, fmt.Errorf("document %d (Namespace): %w", doc, err))
				continue
			}
			if err := namespaceErr(&ns); err != nil {
				errs = append(errs, fmt.Errorf("document %d: %w", doc, err))
				continue
			}
			if d, dup := nss[ns.Metadata.Name]; dup {
				errs = append(errs, fmt.Errorf("document %d: namespace %s: already defined in document %d", doc, ns.Metadata.Name, d))
				continue
			}
			nss[ns.Metadata.Name] = doc
			set.Namespaces = append(set.Namespaces, Namespace{Name: ns.Metadata.Name, Labels: ns.Metadata.Labels})
		default:
			var skip yaml.Node
			_ = dec.Decode(&skip)
			errs = append(errs, fmt.Errorf("document %d: apiVersion %q kind %q: want networking.k8s.io/v1 NetworkPolicy or v1 Namespace", doc, h.APIVersion, h.Kind))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &set, nil
}

func namespaceErr(ns *namespaceDoc) error {
	var errs []error
	if err := ValidNamespace(ns.Metadata.Name); err != nil {
		errs = append(errs, fieldErr("metadata.name", "%v", err))
	}
	if ns.Metadata.Namespace != "" {
		errs = append(errs, fieldErr("metadata.namespace", "a Namespace is not namespaced"))
	}
	for k, v := range ns.Metadata.Labels {
		if err := ValidLabelKey(k); err != nil {
			errs = append(errs, fieldErr("metadata.labels", "%v", err))
		}
		if err := ValidLabelValue(v); err != nil {
			errs = append(errs, fieldErr("metadata.labels."+k, "%v", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("namespace %s: %w", ns.Metadata.Name, errors.Join(errs...))
	}
	return nil
}
