package cni

import (
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/drovernet/drover/cni/ipam"
)

// Bounds on the pod names CNI_ARGS may carry: Kubernetes namespaces are
// DNS labels (RFC 1123, 63 characters), pod names DNS subdomains (253).
const (
	maxPodNamespace = 63
	maxPodName      = 253
)

// podFromArgs reads the pod an attachment belongs to from CNI_ARGS
// ("K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;…", as the kubelet's runtimes pass
// it; CNI spec §3, "CNI_ARGS"). Other keys are ignored, as every runtime
// adds some (K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID, IgnoreUnknown). A
// namespace without a name, or a value Kubernetes would never send, is an
// error naming the key: what is recorded is what network policy matches.
func podFromArgs(args string) (ipam.Pod, *types.Error) {
	var pod ipam.Pod
	if args == "" {
		return pod, nil
	}
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
		case "K8S_POD_NAME":
			if !dnsName(v, maxPodName, true) {
				return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: K8S_POD_NAME %q is not a DNS subdomain (RFC 1123, at most %d characters)", clip([]byte(v)), maxPodName), "")
			}
			pod.Name = v
		}
	}
	if (pod.Namespace == "") != (pod.Name == "") {
		return ipam.Pod{}, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: K8S_POD_NAMESPACE and K8S_POD_NAME come together", "")
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
