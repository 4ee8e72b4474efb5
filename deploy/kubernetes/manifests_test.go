package kubernetes

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	yaml3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/cni"
	"github.com/drovernet/drover/cni/ipam"
)

const namespace = "drover-system"

// downwardEnv stands in for what the DaemonSet's downward API gives the
// daemon (TestDaemonSet checks the DaemonSet sets exactly these).
var downwardEnv = map[string]string{"NODE_NAME": "drv-node-1", "NODE_IP": "192.0.2.10"}

// manifests are the files kustomization.yaml lists, with their kinds.
var manifests = map[string]string{
	"00-namespace.yaml":          "Namespace",
	"10-serviceaccount.yaml":     "ServiceAccount",
	"20-clusterrole.yaml":        "ClusterRole",
	"21-clusterrolebinding.yaml": "ClusterRoleBinding",
	"30-configmap.yaml":          "ConfigMap",
	"40-daemonset.yaml":          "DaemonSet",
}

// decode reads file and decodes it strictly (unknown or duplicate fields
// are errors) into v, which must be the k8s.io/api type of its kind.
func decode(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if docs := strings.Count("\n"+string(b), "\n---"); docs > 0 {
		t.Fatalf("%s: %d document separators, want one document per file", file, docs)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: strict decode into %T: %v", file, v, err)
	}
}

func objectFor(kind string) (any, *metav1.TypeMeta, *metav1.ObjectMeta) {
	switch kind {
	case "Namespace":
		o := &corev1.Namespace{}
		return o, &o.TypeMeta, &o.ObjectMeta
	case "ServiceAccount":
		o := &corev1.ServiceAccount{}
		return o, &o.TypeMeta, &o.ObjectMeta
	case "ClusterRole":
		o := &rbacv1.ClusterRole{}
		return o, &o.TypeMeta, &o.ObjectMeta
	case "ClusterRoleBinding":
		o := &rbacv1.ClusterRoleBinding{}
		return o, &o.TypeMeta, &o.ObjectMeta
	case "ConfigMap":
		o := &corev1.ConfigMap{}
		return o, &o.TypeMeta, &o.ObjectMeta
	case "DaemonSet":
		o := &appsv1.DaemonSet{}
		return o, &o.TypeMeta, &o.ObjectMeta
	}
	return nil, nil, nil
}

var apiVersions = map[string]string{
	"Namespace": "v1", "ServiceAccount": "v1", "ConfigMap": "v1",
	"ClusterRole": "rbac.authorization.k8s.io/v1", "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
	"DaemonSet": "apps/v1",
}

var clusterScoped = []string{"Namespace", "ClusterRole", "ClusterRoleBinding"}

// TestManifestsStrict: every manifest decodes strictly into its type, with
// the right apiVersion, a valid name, drover's namespace where it has one,
// and the kustomization lists exactly these files.
func TestManifestsStrict(t *testing.T) {
	for file, kind := range manifests {
		t.Run(file, func(t *testing.T) {
			obj, tm, om := objectFor(kind)
			decode(t, file, obj)
			if tm.Kind != kind || tm.APIVersion != apiVersions[kind] {
				t.Fatalf("got %s %s, want %s %s", tm.APIVersion, tm.Kind, apiVersions[kind], kind)
			}
			if errs := validation.IsDNS1123Subdomain(om.Name); len(errs) > 0 {
				t.Fatalf("name %q: %v", om.Name, errs)
			}
			if slices.Contains(clusterScoped, kind) {
				if om.Namespace != "" {
					t.Fatalf("cluster-scoped %s has namespace %q", kind, om.Namespace)
				}
			} else if om.Namespace != namespace {
				t.Fatalf("namespace: got %q, want %q", om.Namespace, namespace)
			}
			if om.Labels["app.kubernetes.io/name"] != "drover" {
				t.Fatalf("labels: got %v, want app.kubernetes.io/name: drover", om.Labels)
			}
		})
	}

	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	decode(t, "kustomization.yaml", &k)
	var want []string
	for f := range manifests {
		want = append(want, f)
	}
	sort.Strings(want)
	if !slices.Equal(k.Resources, want) {
		t.Fatalf("kustomization resources: got %q, want %q", k.Resources, want)
	}
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		if _, ok := manifests[f]; !ok && f != "kustomization.yaml" {
			t.Errorf("%s: a manifest this test does not check (add it to manifests)", f)
		}
	}
}

func TestNamespacePodSecurity(t *testing.T) {
	var ns corev1.Namespace
	decode(t, "00-namespace.yaml", &ns)
	if ns.Name != namespace {
		t.Fatalf("namespace: got %q, want %q", ns.Name, namespace)
	}
	// hostNetwork, hostPath and NET_ADMIN are refused below "privileged".
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Fatalf("pod-security enforce: got %q, want privileged", got)
	}
}

// TestRBAC: the role grants exactly what docs/kubernetes.md lists, the
// binding gives it to the DaemonSet's service account.
func TestRBAC(t *testing.T) {
	var role rbacv1.ClusterRole
	decode(t, "20-clusterrole.yaml", &role)
	want := map[string][]string{
		"nodes":           {"list", "watch", "patch"},
		"nodes/status":    {"patch"},
		"pods":            {"get", "list", "watch"},
		"namespaces":      {"list", "watch"},
		"networkpolicies": {"list", "watch"},
	}
	groups := map[string]string{"networkpolicies": "networking.k8s.io"}
	got := map[string][]string{}
	for i, r := range role.Rules {
		for _, res := range r.Resources {
			if !slices.Equal(r.APIGroups, []string{groups[res]}) {
				t.Errorf("rules[%d]: %s in apiGroups %q, want only %q", i, res, r.APIGroups, groups[res])
			}
		}
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rules[%d]: unexpected resourceNames/nonResourceURLs", i)
		}
		for _, res := range r.Resources {
			got[res] = append(got[res], r.Verbs...)
		}
	}
	for res, verbs := range got {
		if slices.Contains(verbs, "*") || res == "*" {
			t.Errorf("%s: wildcard in %q", res, verbs)
		}
		w, ok := want[res]
		if !ok {
			t.Errorf("resource %s granted (%q): not needed", res, verbs)
			continue
		}
		a, b := slices.Sorted(slices.Values(verbs)), slices.Sorted(slices.Values(w))
		if !slices.Equal(a, b) {
			t.Errorf("%s: verbs %q, want %q", res, a, b)
		}
	}
	for res := range want {
		if _, ok := got[res]; !ok {
			t.Errorf("%s: not granted", res)
		}
	}

	var sa corev1.ServiceAccount
	decode(t, "10-serviceaccount.yaml", &sa)
	var rb rbacv1.ClusterRoleBinding
	decode(t, "21-clusterrolebinding.yaml", &rb)
	if rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}) {
		t.Errorf("roleRef: got %+v, want ClusterRole %s", rb.RoleRef, role.Name)
	}
	if want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}}; !slices.Equal(rb.Subjects, want) {
		t.Errorf("subjects: got %+v, want %+v", rb.Subjects, want)
	}
	var ds appsv1.DaemonSet
	decode(t, "40-daemonset.yaml", &ds)
	if ds.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("DaemonSet serviceAccountName: got %q, want %q", ds.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
}

// configMap returns the ConfigMap and its drover.yaml as a generic tree.
func configMap(t *testing.T) (corev1.ConfigMap, map[string]any) {
	t.Helper()
	var cm corev1.ConfigMap
	decode(t, "30-configmap.yaml", &cm)
	var tree map[string]any
	if err := yaml3.Unmarshal([]byte(cm.Data["drover.yaml"]), &tree); err != nil {
		t.Fatalf("drover.yaml: %v", err)
	}
	return cm, tree
}

// lookup returns the value at a dotted path of tree.
func lookup(tree map[string]any, path string) (any, bool) {
	parts := strings.Split(path, ".")
	cur := any(tree)
	for _, p := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func parseTree(t *testing.T, tree map[string]any) (*config.Config, error) {
	t.Helper()
	b, err := yaml3.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	return config.Parse(bytes.NewReader(b))
}

// setDownwardEnv puts downwardEnv into the test's environment.
func setDownwardEnv(t *testing.T) {
	t.Helper()
	for k, v := range downwardEnv {
		t.Setenv(k, v)
	}
}

// droverConfig parses the ConfigMap's drover.yaml as the daemon will, with
// the DaemonSet's environment (node.name and node.underlay come from it).
func droverConfig(t *testing.T) *config.Config {
	t.Helper()
	setDownwardEnv(t)
	_, tree := configMap(t)
	c, err := parseTree(t, tree)
	if err != nil {
		t.Fatalf("drover.yaml: %v", err)
	}
	return c
}

// TestConfigMapDroverYAML: the daemon's config passes drover's own parser,
// with the DaemonSet's environment, and says what the manifests rely on.
func TestConfigMapDroverYAML(t *testing.T) {
	_, tree := configMap(t)
	c := droverConfig(t)
	if c.Cluster == nil {
		t.Fatal("no cluster section")
	}
	for k, want := range map[string]any{
		"cluster.datastore":             "kubernetes",
		"cluster.kubernetes.kubeconfig": "",
	} {
		if got, ok := lookup(tree, k); !ok || got != want {
			t.Errorf("%s: got %v (present %v), want %q", k, got, ok, want)
		}
	}
	if got, _ := lookup(tree, "cluster.kubernetes.pod_cidr"); got != "node" && got != "claim" {
		t.Errorf("cluster.kubernetes.pod_cidr: got %v, want node or claim", got)
	}
	for _, k := range []string{"node.name", "node.underlay", "cluster.join"} {
		if v, ok := lookup(tree, k); ok {
			t.Errorf("%s = %v: set by the Kubernetes mode (downward API, Node objects), not the ConfigMap", k, v)
		}
	}

	if c.Node.Name != downwardEnv["NODE_NAME"] || c.Node.Underlay != downwardEnv["NODE_IP"] {
		t.Errorf("node: got name %q underlay %q, want them from NODE_NAME and NODE_IP (%v)", c.Node.Name, c.Node.Underlay, downwardEnv)
	}
	if !c.Cluster.IsKubernetes() {
		t.Errorf("cluster.datastore: got %q, want kubernetes", c.Cluster.Datastore)
	}
}

// TestConfigMapConflist: the conflist passes the plugin's own parser and
// libcni's, is a version containerd 1.6 and Podman 4 load, chains portmap,
// and agrees with the daemon's config.
func TestConfigMapConflist(t *testing.T) {
	cm, _ := configMap(t)
	raw, ok := cm.Data[installName(t)]
	if !ok {
		t.Fatalf("ConfigMap has no %s (the init container's --name)", installName(t))
	}
	l, err := cni.ParseConfList([]byte(raw))
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	if l.CNIVersion != "1.0.0" || !slices.Equal(l.CNIVersions, []string{"1.0.0", "1.1.0"}) {
		t.Errorf("got cniVersion %s, cniVersions %q; want 1.0.0 (containerd 1.6, Podman 4 refuse 1.1.0) and [1.0.0 1.1.0] (containerd 2.x then runs GC and STATUS)", l.CNIVersion, l.CNIVersions)
	}
	if !slices.Equal(l.Types, []string{cni.PluginType, "portmap"}) {
		t.Errorf("plugins: got %q, want drover then portmap", l.Types)
	}
	drover := conflistDrover(t)
	c := droverConfig(t)
	if drover.ClusterCIDR != c.Cluster.CIDR {
		t.Errorf("conflist clusterCIDR %s, drover.yaml cluster.cidr %s: must be equal", drover.ClusterCIDR, c.Cluster.CIDR)
	}
	if sock := cmp(drover.DaemonSocket, cni.DefaultDaemonSocket); sock != c.ControlSocket {
		t.Errorf("conflist daemonSocket %s, drover.yaml control_socket %s: must be equal", sock, c.ControlSocket)
	}
}

// droverEntry is what the tests read of the conflist's drover entry.
type droverEntry struct {
	ClusterCIDR  string `json:"clusterCIDR"`
	DaemonSocket string `json:"daemonSocket"`
	IPAM         struct {
		DataDir string `json:"dataDir"`
	} `json:"ipam"`
}

// conflistDrover loads the ConfigMap's conflist with libcni, as a runtime
// does, and returns its drover entry.
func conflistDrover(t *testing.T) droverEntry {
	t.Helper()
	cm, _ := configMap(t)
	nl, err := libcni.ConfListFromBytes([]byte(cm.Data[installName(t)]))
	if err != nil {
		t.Fatalf("libcni: %v", err)
	}
	var d droverEntry
	for _, p := range nl.Plugins {
		if p.Network.Type == cni.PluginType {
			if err := yaml.Unmarshal(p.Bytes, &d); err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatal("conflist: no drover entry")
	return d
}

func cmp(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func daemonSet(t *testing.T) (*appsv1.DaemonSet, corev1.Container, corev1.Container) {
	t.Helper()
	var ds appsv1.DaemonSet
	decode(t, "40-daemonset.yaml", &ds)
	ps := ds.Spec.Template.Spec
	if len(ps.InitContainers) != 1 || len(ps.Containers) != 1 {
		t.Fatalf("got %d init containers and %d containers, want 1 and 1", len(ps.InitContainers), len(ps.Containers))
	}
	return &ds, ps.InitContainers[0], ps.Containers[0]
}

// flagValue returns --name=VALUE or --name VALUE from args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// installName is the init container's --name.
func installName(t *testing.T) string {
	_, ic, _ := daemonSet(t)
	n, ok := flagValue(ic.Args, "name")
	if !ok {
		t.Fatal("init container: no --name")
	}
	return n
}

// mountOf finds the volume mount holding path in c (the longest mount
// path that contains it) and its volume, and path relative to the mount.
func mountOf(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container, path string) (corev1.VolumeMount, corev1.Volume, string) {
	t.Helper()
	var best corev1.VolumeMount
	for _, m := range c.VolumeMounts {
		if (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) && len(m.MountPath) > len(best.MountPath) {
			best = m
		}
	}
	if best.Name == "" {
		t.Fatalf("container %s: nothing mounted at %s", c.Name, path)
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == best.Name {
			rel, _ := filepath.Rel(best.MountPath, path)
			return best, v, rel
		}
	}
	t.Fatalf("container %s: mount %s names no volume", c.Name, best.Name)
	return best, corev1.Volume{}, ""
}

// hostPathAt checks that path in c is the same path on the host, through a
// hostPath volume of the given type, writable unless readOnly.
func hostPathAt(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container, path, hostPath string, typ corev1.HostPathType, writable bool) {
	t.Helper()
	m, v, rel := mountOf(t, ds, c, path)
	if v.HostPath == nil {
		t.Errorf("%s: %s is volume %s, want a hostPath", c.Name, path, v.Name)
		return
	}
	if got := filepath.Join(v.HostPath.Path, rel); got != hostPath {
		t.Errorf("%s: %s is %s on the host, want %s", c.Name, path, got, hostPath)
	}
	if v.HostPath.Type == nil || *v.HostPath.Type != typ {
		t.Errorf("%s: hostPath %s type %v, want %s", c.Name, v.HostPath.Path, v.HostPath.Type, typ)
	}
	if writable && m.ReadOnly {
		t.Errorf("%s: %s mounted read-only, must be writable", c.Name, path)
	}
}

// TestDaemonSet: the pod runs on the node's network with the least it
// needs, on every node, and mounts what the ConfigMap's files point at.
func TestDaemonSet(t *testing.T) {
	ds, ic, dc := daemonSet(t)
	ps := ds.Spec.Template.Spec
	cm, _ := configMap(t)
	c := droverConfig(t)

	if !ps.HostNetwork || ps.HostPID || ps.HostIPC {
		t.Errorf("hostNetwork %v hostPID %v hostIPC %v: want only hostNetwork", ps.HostNetwork, ps.HostPID, ps.HostIPC)
	}
	if ps.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy: got %s, want %s", ps.DNSPolicy, corev1.DNSClusterFirstWithHostNet)
	}
	if ps.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName: got %q, want system-node-critical", ps.PriorityClassName)
	}
	// Tolerates every taint: an Exists toleration with no key and no effect.
	if !slices.ContainsFunc(ps.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == "" && tl.TolerationSeconds == nil
	}) {
		t.Errorf("tolerations %+v: want {operator: Exists} (every taint)", ps.Tolerations)
	}
	if ps.TerminationGracePeriodSeconds == nil || *ps.TerminationGracePeriodSeconds < 3 || *ps.TerminationGracePeriodSeconds > 30 {
		t.Errorf("terminationGracePeriodSeconds: got %v, want 3..30 (the daemon's shutdown takes about 2 s)", ps.TerminationGracePeriodSeconds)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil ||
		us.RollingUpdate.MaxUnavailable == nil || us.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("updateStrategy: got %+v, want RollingUpdate, maxUnavailable 1", us)
	}
	sel, err := metav1.LabelSelectorAsMap(ds.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}

	// Security: nobody privileged; the daemon has NET_ADMIN and NET_RAW
	// only, the init container nothing.
	for _, tc := range []struct {
		c    corev1.Container
		caps []corev1.Capability
	}{{ic, nil}, {dc, []corev1.Capability{"NET_ADMIN", "NET_RAW"}}} {
		sc := tc.c.SecurityContext
		if sc == nil || sc.Capabilities == nil {
			t.Errorf("%s: no securityContext.capabilities", tc.c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", tc.c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation not false", tc.c.Name)
		}
		if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: drop %q, want [ALL]", tc.c.Name, sc.Capabilities.Drop)
		}
		if got := slices.Sorted(slices.Values(sc.Capabilities.Add)); !slices.Equal(got, tc.caps) {
			t.Errorf("%s: add %q, want %q", tc.c.Name, got, tc.caps)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem writable", tc.c.Name)
		}
		if tc.c.Image != ic.Image {
			t.Errorf("%s: image %s, the init container's is %s: one image", tc.c.Name, tc.c.Image, ic.Image)
		}
	}
	for _, v := range ps.Volumes {
		used := false
		for _, c := range []corev1.Container{ic, dc} {
			used = used || slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name })
		}
		if !used {
			t.Errorf("volume %s: mounted by no container", v.Name)
		}
	}

	// The daemon's environment: the downward API for kubernetes mode.
	downward := map[string]string{"NODE_NAME": "spec.nodeName", "NODE_IP": "status.hostIP"}
	for name := range downwardEnv {
		if _, ok := downward[name]; !ok {
			t.Errorf("downwardEnv %s: not a variable the DaemonSet is checked to set", name)
		}
	}
	for name, field := range downward {
		i := slices.IndexFunc(dc.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		if i < 0 || dc.Env[i].ValueFrom == nil || dc.Env[i].ValueFrom.FieldRef == nil || dc.Env[i].ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("env %s: want valueFrom fieldRef %s", name, field)
		}
	}

	// The daemon's config file comes from the ConfigMap.
	if len(dc.Command) < 2 || dc.Command[1] != "run" {
		t.Fatalf("daemon command: got %q, want drover run", dc.Command)
	}
	cfgPath, ok := flagValue(dc.Command, "config")
	if !ok {
		t.Fatalf("daemon command %q: no --config", dc.Command)
	}
	if _, v, rel := mountOf(t, ds, dc, cfgPath); v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || cm.Data[rel] == "" {
		t.Errorf("--config %s: not the ConfigMap %s's key %s", cfgPath, cm.Name, rel)
	}
	// The key from the Secret, read-only, a mode drover accepts.
	m, v, rel := mountOf(t, ds, dc, c.Cluster.KeyFile)
	switch {
	case v.Secret == nil || v.Secret.SecretName != "drover-cluster-key" || rel != "cluster.key":
		t.Errorf("cluster.key_file %s: want key cluster.key of Secret drover-cluster-key", c.Cluster.KeyFile)
	case !m.ReadOnly:
		t.Errorf("cluster key mounted writable")
	case v.Secret.DefaultMode == nil:
		t.Errorf("cluster key: no defaultMode (the kubelet's default, 0644, is refused by drover; want 0400)")
	case *v.Secret.DefaultMode&0o077 != 0:
		t.Errorf("cluster key mode %#o: drover refuses a key group or others can read (want 0400)", *v.Secret.DefaultMode)
	}
	// Host state: the same paths on the host as in the container, so the
	// CNI plugin (run on the host) and a restarted pod find them.
	hostPathAt(t, ds, dc, c.StateDir, c.StateDir, corev1.HostPathDirectoryOrCreate, true)
	hostPathAt(t, ds, dc, filepath.Dir(c.ControlSocket), filepath.Dir(c.ControlSocket), corev1.HostPathDirectoryOrCreate, true)
	dataDir := cmp(conflistDrover(t).IPAM.DataDir, ipam.DefaultDataDir)
	hostPathAt(t, ds, dc, dataDir, dataDir, corev1.HostPathDirectoryOrCreate, true)
	hostPathAt(t, ds, dc, "/dev/net/tun", "/dev/net/tun", corev1.HostPathCharDev, true)

	// Probes: http.listen's port, on loopback when it listens there.
	ap, err := netip.ParseAddrPort(c.HTTP.ListenAddr)
	if err != nil {
		t.Fatalf("http.listen %q: %v", c.HTTP.ListenAddr, err)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"startup", dc.StartupProbe, "/healthz"}, {"liveness", dc.LivenessProbe, "/healthz"}, {"readiness", dc.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Port.IntValue() != int(ap.Port()) {
			t.Errorf("%s probe: %s port %s, want %s port %d", p.name, g.Path, g.Port.String(), p.path, ap.Port())
		}
		if ap.Addr().IsLoopback() && g.Host != ap.Addr().String() {
			t.Errorf("%s probe: host %q; http.listen is %s, so the kubelet must probe %s", p.name, g.Host, ap, ap.Addr())
		}
	}
	// Resources: requests, a memory limit, no CPU limit.
	r := dc.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", r)
	}
	if _, ok := r.Limits[corev1.ResourceCPU]; ok {
		t.Errorf("a CPU limit: throttling a data plane costs latency and drops")
	}
	if r.Limits.Memory().Cmp(*r.Requests.Memory()) < 0 {
		t.Errorf("memory limit below request")
	}

	// The init container: the conflist from the ConfigMap, the host's CNI
	// directories writable.
	if len(ic.Command) < 2 || ic.Command[1] != "install-cni" || ic.Command[0] != dc.Command[0] {
		t.Fatalf("init command: got %q, want %s install-cni", ic.Command, dc.Command[0])
	}
	list, _ := flagValue(ic.Args, "conflist")
	if _, v, rel := mountOf(t, ds, ic, list); v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || cm.Data[rel] == "" {
		t.Errorf("--conflist %s: not a key of ConfigMap %s", list, cm.Name)
	}
	binDir, _ := flagValue(ic.Args, "bin-dir")
	confDir, _ := flagValue(ic.Args, "conf-dir")
	hostPathAt(t, ds, ic, binDir, "/opt/cni/bin", corev1.HostPathDirectoryOrCreate, true)
	hostPathAt(t, ds, ic, confDir, "/etc/cni/net.d", corev1.HostPathDirectoryOrCreate, true)
}
