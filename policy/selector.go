package policy

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Selector is the API's LabelSelector: every MatchLabels pair and every
// requirement must hold. The empty selector selects everything.
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty" yaml:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `json:"matchExpressions,omitempty" yaml:"matchExpressions,omitempty"`
}

// Requirement is LabelSelectorRequirement.
type Requirement struct {
	Key      string   `json:"key" yaml:"key"`
	Operator Operator `json:"operator" yaml:"operator"`
	Values   []string `json:"values,omitempty" yaml:"values,omitempty"`
}

// Operator is a requirement's operator.
type Operator string

// The operators of LabelSelectorRequirement.
const (
	In           Operator = "In"
	NotIn        Operator = "NotIn"
	Exists       Operator = "Exists"
	DoesNotExist Operator = "DoesNotExist"
)

// Empty reports whether s selects everything.
func (s *Selector) Empty() bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// Matches reports whether labels satisfy s. s must be valid.
func (s *Selector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case In:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case NotIn:
			// As in the API: a pod without the key satisfies NotIn.
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case Exists:
			if !ok {
				return false
			}
		case DoesNotExist:
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// String is the selector in kubectl's syntax: "app=web,tier in (a,b),!x";
// "{}" (everything) when empty.
func (s *Selector) String() string {
	if s.Empty() {
		return "{}"
	}
	var parts []string
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+s.MatchLabels[k])
	}
	for _, r := range s.MatchExpressions {
		switch r.Operator {
		case In:
			parts = append(parts, r.Key+" in ("+strings.Join(r.Values, ",")+")")
		case NotIn:
			parts = append(parts, r.Key+" notin ("+strings.Join(r.Values, ",")+")")
		case Exists:
			parts = append(parts, r.Key)
		case DoesNotExist:
			parts = append(parts, "!"+r.Key)
		}
	}
	return strings.Join(parts, ",")
}

// validate returns what is wrong with s, each error naming its field
// under path.
func (s *Selector) validate(path string) []error {
	var errs []error
	for k, v := range s.MatchLabels {
		if err := ValidLabelKey(k); err != nil {
			errs = append(errs, fieldErr(path+".matchLabels", "%v", err))
		}
		if err := ValidLabelValue(v); err != nil {
			errs = append(errs, fieldErr(path+".matchLabels."+k, "%v", err))
		}
	}
	for i, r := range s.MatchExpressions {
		p := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		if err := ValidLabelKey(r.Key); err != nil {
			errs = append(errs, fieldErr(p+".key", "%v", err))
		}
		switch r.Operator {
		case In, NotIn:
			if len(r.Values) == 0 {
				errs = append(errs, fieldErr(p+".values", "operator %s needs at least one value", r.Operator))
			}
			for j, v := range r.Values {
				if err := ValidLabelValue(v); err != nil {
					errs = append(errs, fieldErr(fmt.Sprintf("%s.values[%d]", p, j), "%v", err))
				}
			}
		case Exists, DoesNotExist:
			if len(r.Values) != 0 {
				errs = append(errs, fieldErr(p+".values", "operator %s takes no values", r.Operator))
			}
		default:
			errs = append(errs, fieldErr(p+".operator", "%q: want In, NotIn, Exists or DoesNotExist", r.Operator))
		}
	}
	return errs
}

// Label syntax, as the API server checks it (k8s.io/apimachinery
// validation: qualified names and label values).
var (
	labelName   = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	dnsSubdom   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dns1123Name = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// ValidLabelKey checks a label key: an optional DNS subdomain prefix and
// "/", then a name of at most 63 characters.
func ValidLabelKey(k string) error {
	name := k
	if i := strings.IndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if prefix == "" || len(prefix) > 253 || !dnsSubdom.MatchString(prefix) {
			return fmt.Errorf("label key %q: prefix must be a DNS subdomain", k)
		}
	}
	if name == "" || len(name) > 63 || !labelName.MatchString(name) {
		return fmt.Errorf("label key %q: name must be 1-63 characters, alphanumeric at both ends, '-', '_' or '.' inside", k)
	}
	return nil
}

// ValidLabelValue checks a label value: empty, or at most 63 characters,
// alphanumeric at both ends, '-', '_' or '.' inside.
func ValidLabelValue(v string) error {
	if len(v) > 63 || !labelName.MatchString(v) {
		return fmt.Errorf("label value %q: at most 63 characters, alphanumeric at both ends, '-', '_' or '.' inside", v)
	}
	return nil
}

// ValidName checks a namespace, pod or policy name (RFC 1123 label for a
// namespace; the API allows subdomains for pods and policies, which this
// accepts too).
func ValidName(s string) error {
	if s == "" || len(s) > 253 || !dnsSubdom.MatchString(s) {
		return fmt.Errorf("name %q: want lower-case alphanumerics, '-' and '.', at most 253 characters", s)
	}
	return nil
}

// ValidNamespace checks a namespace name (an RFC 1123 label).
func ValidNamespace(s string) error {
	if s == "" || len(s) > 63 || !dns1123Name.MatchString(s) {
		return fmt.Errorf("namespace %q: want an RFC 1123 label (lower-case alphanumerics and '-', at most 63)", s)
	}
	return nil
}
