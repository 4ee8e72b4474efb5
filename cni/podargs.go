package cni

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/policy"
)

// Bounds on the pod names CNI_ARGS may carry: Kubernetes namespaces are
// DNS labels (RFC 1123, 63 characters), pod names DNS subdomains (253).
const (
	maxPodNamespace = 63
	maxPodName      = 253
)

// podFromArgs reads the pod an attachment belongs to from CNI_ARGS
// ("K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;…", as the kubelet's runtimes pass
// it; CNI spec §3, "CNI_ARGS"), and its labels for network policy from
// DROVER_LABELS ("app:web,tier:db": CNI_ARGS reserves ';' and '=', and
// neither ',' nor ':' can occur in a label key or value). Other keys are ignored, as every runtime
// adds some (K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID, IgnoreUnknown). A
// namespace without a name, or a value Kubernetes would never send, is an
// error naming the key: what is recorded is what network policy matches.
// K8S_POD_NAME without K8S_POD_NAMESPACE is not a pod: Podman sets it
// alone to the container's name, for the dnsname plugin (containers/common
// libnetwork/cni, "Do not set the K8S env vars"), and a container name may
// be anything Podman allows ("My_App"); it is ignored.
func podFromArgs(args string) (ipam.Pod, *types.Error) {
	var pod ipam.Pod
	if args == "" {
		return pod, nil
	}
	name, hasName := "", false
	for _, kv := range strings.Split(args, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			if kv == "" {
				continue
			}
			return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", clip([]byte(kv))), "")
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			if !dnsName(v, maxPodNamespace, false) {
				return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: K8S_POD_NAMESPACE %q is not a DNS label (RFC 1123, at most %d characters)", clip([]byte(v)), maxPodNamespace), "")
			}
			pod.Namespace = v
		case "DROVER_PORTS":
			ps, err := parsePorts(v)
			if err != nil {
				return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: DROVER_PORTS: "+err.Error(), "")
			}
			pod.Ports = ps
		case "DROVER_LABELS":
			l, err := parseLabels(v)
			if err != nil {
				return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: DROVER_LABELS: "+err.Error(), "")
			}
			pod.Labels = l
		case "K8S_POD_NAME":
			name, hasName = v, true
		}
	}
	switch {
	case pod.Namespace == "":
		// No pod (Podman's K8S_POD_NAME alone, or none at all).
	case !hasName || name == "":
		return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: K8S_POD_NAMESPACE without K8S_POD_NAME: a pod needs both", "")
	case !dnsName(name, maxPodName, true):
		return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: K8S_POD_NAME %q is not a DNS subdomain (RFC 1123, at most %d characters)", clip([]byte(name)), maxPodName), "")
	default:
		pod.Name = name
	}
	return pod, nil
}

// dnsName reports whether s is a lower-case RFC 1123 label (dots: a
// subdomain of such labels) of at most max characters.
func dnsName(s string, max int, dots bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || (!dots && label != s) || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// maxLabels bounds the labels one attachment may carry.
const maxLabels = 64

// parseLabels reads "key:value,key:value" and checks every key and value
// as the API server does (policy.ValidLabelKey, ValidLabelValue).
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return nil, fmt.Errorf("%q is not key:value", clip([]byte(kv)))
		}
		if err := policy.ValidLabelKey(k); err != nil {
			return nil, err
		}
		if err := policy.ValidLabelValue(v); err != nil {
			return nil, err
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		out[k] = v
	}
	if len(out) > maxLabels {
		return nil, fmt.Errorf("%d labels, at most %d", len(out), maxLabels)
	}
	return out, nil
}

// checkLabels checks labels from the network config's args.cni.labels.
func checkLabels(l map[string]string) error {
	if len(l) > maxLabels {
		return fmt.Errorf("%d labels, at most %d", len(l), maxLabels)
	}
	for k, v := range l {
		if err := policy.ValidLabelKey(k); err != nil {
			return err
		}
		if err := policy.ValidLabelValue(v); err != nil {
			return err
		}
	}
	return nil
}

// argsLabels reads the labels of the network config's "args" (CNI
// CONVENTIONS.md, "args in network config": {"cni": {"labels": [{"key":
// "app", "value": "web"}]}}); other keys of args are not drover's.
func argsLabels(raw json.RawMessage) (map[string]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var a struct {
		CNI struct {
			Labels []struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			} `json:"labels"`
		} `json:"cni"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("args: %w", err)
	}
	out := map[string]string{}
	for _, l := range a.CNI.Labels {
		if _, dup := out[l.Key]; dup {
			return nil, fmt.Errorf("args.cni.labels: label %q given twice", l.Key)
		}
		out[l.Key] = l.Value
	}
	if err := checkLabels(out); err != nil {
		return nil, fmt.Errorf("args.cni.labels: %w", err)
	}
	return out, nil
}

// parsePorts reads "http:8080/tcp,dns:53/udp": a container's named ports
// (name as Kubernetes checks container port names, RFC 6335; protocol
// tcp, udp or sctp, default tcp).
func parsePorts(s string) ([]ipam.NamedPort, error) {
	var out []ipam.NamedPort
	if s == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		name, rest, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("%q is not name:port[/protocol]", clip([]byte(item)))
		}
		if err := policy.ValidPortName(name); err != nil {
			return nil, err
		}
		num, proto, _ := strings.Cut(rest, "/")
		if proto == "" {
			proto = "tcp"
		}
		p, err := policy.ParseProtocol(proto)
		if err != nil {
			return nil, err
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("port %q of %s: want 1-65535", clip([]byte(num)), name)
		}
		for _, o := range out {
			if o.Name == name && o.Protocol == string(p) {
				return nil, fmt.Errorf("port %s/%s given twice", name, p)
			}
		}
		out = append(out, ipam.NamedPort{Name: name, Port: uint16(n), Protocol: string(p)})
	}
	if len(out) > maxLabels {
		return nil, fmt.Errorf("%d ports, at most %d", len(out), maxLabels)
	}
	return out, nil
}
