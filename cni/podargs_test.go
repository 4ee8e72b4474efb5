package cni

import (
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/drovernet/drover/cni/ipam"
)

func TestPodFromArgs(t *testing.T) {
	for _, tc := range []struct {
		args string
		want ipam.Pod
		err  string
	}{
		{"", ipam.Pod{}, ""},
		{"IgnoreUnknown=1", ipam.Pod{}, ""},
		{"IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a-5d8f.b;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1-2", ipam.Pod{Namespace: "x", Name: "a-5d8f.b"}, ""},
		{"K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;", ipam.Pod{Namespace: "kube-system", Name: "coredns-1"}, ""},
		{"K8S_POD_NAMESPACE=x", ipam.Pod{}, "K8S_POD_NAMESPACE without K8S_POD_NAME"},
		{"K8S_POD_NAMESPACE=x;K8S_POD_NAME=", ipam.Pod{}, "K8S_POD_NAMESPACE without K8S_POD_NAME"},
		// Podman 4: the container's name alone, any name Podman allows.
		{"IgnoreUnknown=1;K8S_POD_NAME=My_App.1", ipam.Pod{}, ""},
		{"K8S_POD_NAME=drv-pc-h1", ipam.Pod{}, ""},
		{"K8S_POD_NAMESPACE=X;K8S_POD_NAME=a", ipam.Pod{}, "K8S_POD_NAMESPACE \"X\" is not a DNS label"},
		{"K8S_POD_NAMESPACE=a.b;K8S_POD_NAME=a", ipam.Pod{}, "not a DNS label"},
		{"K8S_POD_NAMESPACE=x;K8S_POD_NAME=-a", ipam.Pod{}, "K8S_POD_NAME \"-a\" is not a DNS subdomain"},
		{"K8S_POD_NAMESPACE=x;K8S_POD_NAME=" + strings.Repeat("a", 254), ipam.Pod{}, "at most 253"},
		{"K8S_POD_NAMESPACE=x;K8S_POD_NAME=a/../b", ipam.Pod{}, "not a DNS subdomain"},
		{"garbage", ipam.Pod{}, `"garbage" is not KEY=VALUE`},
		{"DROVER_LABELS=app:web,example.com/tier:db,empty:", ipam.Pod{Labels: map[string]string{"app": "web", "example.com/tier": "db", "empty": ""}}, ""},
		{"DROVER_LABELS=", ipam.Pod{Labels: map[string]string{}}, ""},
		{"DROVER_LABELS=app", ipam.Pod{}, `DROVER_LABELS: "app" is not key:value`},
		{"DROVER_LABELS=app:a b", ipam.Pod{}, "label value"},
		{"DROVER_LABELS=-x:a", ipam.Pod{}, "label key"},
		{"DROVER_LABELS=a:1,a:2", ipam.Pod{}, "given twice"},
		{"DROVER_PORTS=http:8080,dns:53/udp,serve-80-sctp:80/SCTP", ipam.Pod{Ports: []ipam.NamedPort{{Name: "http", Port: 8080, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}, {Name: "serve-80-sctp", Port: 80, Protocol: "SCTP"}}}, ""},
		{"DROVER_PORTS=http", ipam.Pod{}, "not name:port"},
		{"DROVER_PORTS=HTTP:80", ipam.Pod{}, "not a port name"},
		{"DROVER_PORTS=http:0", ipam.Pod{}, "want 1-65535"},
		{"DROVER_PORTS=http:80/icmp", ipam.Pod{}, "want TCP, UDP or SCTP"},
		{"DROVER_PORTS=http:80,http:81", ipam.Pod{}, "given twice"},
	} {
		got, err := podFromArgs(tc.args)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: got error %v, want %+v", tc.args, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || err.Code != types.ErrInvalidEnvironmentVariables):
			t.Errorf("%q: got %+v %v, want error code %d containing %q", tc.args, got, err, types.ErrInvalidEnvironmentVariables, tc.err)
		case !reflect.DeepEqual(got, tc.want):
			t.Errorf("%q: got %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func FuzzPodFromArgs(f *testing.F) {
	f.Add("K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")
	f.Add("IgnoreUnknown=1;K8S_POD_UID=u")
	f.Fuzz(func(t *testing.T, s string) {
		pod, err := podFromArgs(s)
		if err != nil {
			return
		}
		if (pod.Namespace == "") != (pod.Name == "") || len(pod.Namespace) > maxPodNamespace || len(pod.Name) > maxPodName ||
			strings.ContainsAny(pod.Namespace+pod.Name, "/\x00 ") {
			t.Fatalf("%q: accepted %+v", s, pod)
		}
	})
}

// The daemon checks notices' pod fields with the plugin's rule.
func TestLocalCheckPod(t *testing.T) {
	for _, tc := range []struct {
		l    Local
		want string
	}{
		{Local{}, ""},
		{Local{PodNamespace: "x", PodName: "a.b-1"}, ""},
		{Local{PodNamespace: "x"}, "come together"},
		{Local{PodNamespace: "x/y", PodName: "a"}, "not a DNS label"},
		{Local{PodNamespace: "x", PodName: "A"}, "not a DNS subdomain"},
	} {
		if got := tc.l.CheckPod(); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%+v: got %q, want %q", tc.l, got, tc.want)
		}
	}
}

func TestArgsLabels(t *testing.T) {
	for _, tc := range []struct {
		args string
		want map[string]string
		err  string
	}{
		{``, nil, ""},
		{`{"other": 1}`, map[string]string{}, ""},
		{`{"cni": {"labels": [{"key": "project", "value": "a"}, {"key": "app", "value": "web"}]}}`, map[string]string{"project": "a", "app": "web"}, ""},
		{`{"cni": {"labels": [{"key": "project", "value": "a b"}]}}`, nil, "label value"},
		{`{"cni": {"labels": [{"key": "p", "value": "a"}, {"key": "p", "value": "b"}]}}`, nil, "given twice"},
		{`{"cni": {"labels": "x"}}`, nil, "args:"},
	} {
		got, err := argsLabels([]byte(tc.args))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: got error %v, want %v", tc.args, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, %v; want an error containing %q", tc.args, got, err, tc.err)
		case tc.err == "" && !reflect.DeepEqual(got, tc.want):
			t.Errorf("%s: got %v, want %v", tc.args, got, tc.want)
		}
	}
}
