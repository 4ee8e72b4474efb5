package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// KubeVersion is the Kubernetes release .ci/run builds (step kube) and the
// kube helpers expect.
const KubeVersion = "v1.37.2"

// DefaultKubeBin is where .ci/run caches the Kubernetes binaries when
// DROVER_CI_CACHE is not set; the helpers look there when DROVER_KUBE_BIN is
// not set either.
const DefaultKubeBin = "/var/cache/drover-ci/k8s-" + KubeVersion + "/bin"

// KubeUsers are the non-admin users every API server of StartKube knows
// (each has its own token): UserKubeconfig gives a kubeconfig for one, and
// BindClusterRole grants it a ClusterRole, so that a test can check what a
// role allows. The API server reads its token file only at start, hence a
// fixed set; ServiceAccountKubeconfig covers any ServiceAccount.
var KubeUsers = []string{"drover", "user1", "user2"}

// KubeBin returns the path of a Kubernetes binary (kube-apiserver, kubectl,
// kubelet, crictl): $DROVER_KUBE_BIN/name, else DefaultKubeBin/name. The error
// says how to get it.
func KubeBin(name string) (string, error) {
	dir := os.Getenv("DROVER_KUBE_BIN")
	if dir == "" {
		dir = DefaultKubeBin
	}
	p := filepath.Join(dir, name)
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s not found in %s (DROVER_KUBE_BIN; .ci/run step kube builds it)", name, dir)
	}
	return p, nil
}

// Kube is an etcd and a kube-apiserver on loopback, started by StartKube and
// stopped when the test ends (the API server first: stopped after etcd, its
// shutdown hangs).
type Kube struct {
	// Server is the API server's URL, https://127.0.0.1:PORT.
	Server string
	// Token is the admin's bearer token (group system:masters), random per
	// run.
	Token string
	// Kubeconfig is the admin's kubeconfig (server, token, TLS not checked:
	// the API server's certificate is self-signed).
	Kubeconfig string
	// Dir holds etcd's data, the API server's keys, certificates and logs,
	// and the kubeconfigs.
	Dir string
	// Etcd is etcd's client URL, http://127.0.0.1:PORT.
	Etcd string

	kubectl string
	apiArgs []string
	tokens  map[string]string // user -> token (admin included)
	client  *http.Client

	mu  sync.Mutex // guards api and served
	api *process   // nil while stopped
	// served: the namespaces ServeIn relays into.
	served map[string]bool
	// etcd is never restarted: StopAPIServer keeps it.
	etcd *process
}

// StartKube starts etcd (Debian's etcd-server) and kube-apiserver on free
// ports of 127.0.0.1, as in ../shared/kubernetes/README.md, and returns once
// /readyz answers ok. Both are stopped when the test ends. Without the
// binaries (DROVER_KUBE_BIN, etcd on PATH) the test is skipped, or fails in
// CI (DROVER_CI or CI set). It needs no root: everything is on loopback of
// the test process's own namespace (ServeIn reaches into lab namespaces).
func StartKube(t testing.TB) *Kube {
	t.Helper()
	apiserver, err := KubeBin("kube-apiserver")
	needTool(t, err, "the kube tests need kube-apiserver "+KubeVersion)
	kubectl, err := KubeBin("kubectl")
	needTool(t, err, "the kube tests need kubectl "+KubeVersion)
	etcdBin, err := lookPath("etcd")
	needTool(t, err, "the kube tests need etcd: apt-get install --no-install-recommends etcd-server")

	k := &Kube{Dir: t.TempDir(), kubectl: kubectl, tokens: map[string]string{}}
	k.client = &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	t.Cleanup(func() {
		if err := k.stop(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := k.startEtcd(ctx, etcdBin); err != nil {
		t.Fatal(err)
	}
	if err := k.prepareAPIServer(apiserver); err != nil {
		t.Fatal(err)
	}
	if err := k.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	return k
}

// lookPath is exec.LookPath with an error that names the program.
func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH") + ":/usr/sbin:/usr/bin") {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w on PATH", name, errNotFound)
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 just now.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startEtcd starts etcd with its data under k.Dir and waits for /health.
func (k *Kube) startEtcd(ctx context.Context, bin string) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	k.Etcd = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	argv := []string{bin, "--name", "default", "--data-dir", filepath.Join(k.Dir, "etcd"),
		"--listen-client-urls", k.Etcd, "--advertise-client-urls", k.Etcd,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default=" + peer}
	// ETCD_UNSUPPORTED_ARCH only matters off amd64/arm64; the environment is
	// otherwise the test's, minus any ETCD_* that would change the flags.
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "ETCD_") {
			env = append(env, e)
		}
	}
	p, err := startProcess("etcd", nil, filepath.Join(k.Dir, "etcd.log"), argv, env)
	if err != nil {
		return err
	}
	k.etcd = p
	err = Poll(ctx, 30*time.Second, 50*time.Millisecond, func() error {
		if p.exited() {
			return p.exitedErr()
		}
		resp, err := k.client.Get(k.Etcd + "/health")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, []byte(`"health":"true"`)) {
			return fmt.Errorf("etcd /health: %s", b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("etcd did not become healthy on %s: %w\n%s", k.Etcd, err, p.tail(20))
	}
	return nil
}

// prepareAPIServer writes the service-account keys, the token file and the
// admin kubeconfig, and fixes the API server's command line.
func (k *Kube) prepareAPIServer(bin string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	k.Server = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	saKey, saPub, err := writeSAKeys(k.Dir)
	if err != nil {
		return err
	}
	var tokens strings.Builder
	for i, u := range append([]string{"admin"}, KubeUsers...) {
		tok := randomToken()
		k.tokens[u] = tok
		groups := ""
		if u == "admin" {
			groups = `,"system:masters"`
			k.Token = tok
		}
		fmt.Fprintf(&tokens, "%s,%s,uid-%d-%s%s\n", tok, u, i, u, groups)
	}
	tokenFile := filepath.Join(k.Dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens.String()), 0o600); err != nil {
		return err
	}
	k.Kubeconfig = filepath.Join(k.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(k.Kubeconfig, k.Server, "admin", k.Token); err != nil {
		return err
	}
	k.apiArgs = []string{bin,
		"--etcd-servers=" + k.Etcd,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[0]),
		"--cert-dir=" + filepath.Join(k.Dir, "certs"),
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// else "cannot use public IP 127.0.0.1 with endpoint reconciler"
		"--endpoint-reconciler-type=none",
		// no controller-manager creates the default ServiceAccounts
		"--disable-admission-plugins=ServiceAccount",
	}
	return nil
}

// randomToken returns 32 random hex digits.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeSAKeys writes an RSA key pair for service-account tokens into dir.
func writeSAKeys(dir string) (keyPath, pubPath string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", fmt.Errorf("service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("service-account key: %w", err)
	}
	keyPath, pubPath = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	err = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	if err == nil {
		err = os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	}
	return keyPath, pubPath, err
}

// writeKubeconfig writes a kubeconfig for server with a bearer token. TLS is
// not verified: the API server's certificate is self-signed.
func writeKubeconfig(path, server, user, token string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: drv
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: %s
  user:
    token: %s
contexts:
- name: drv
  context: {cluster: drv, user: %s}
current-context: drv
`, server, user, token, user)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// StartAPIServer starts the API server again after StopAPIServer, on the
// same port and with the same etcd, and returns once /readyz answers ok (its
// first start, in StartKube, takes 3–5 s). It is a no-op while it runs.
func (k *Kube) StartAPIServer(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.api != nil {
		return nil
	}
	p, err := startProcess("kube-apiserver", nil, filepath.Join(k.Dir, "kube-apiserver.log"), k.apiArgs, nil)
	if err != nil {
		return err
	}
	err = Poll(ctx, 60*time.Second, 100*time.Millisecond, func() error {
		if p.exited() {
			return p.exitedErr()
		}
		return k.readyz()
	})
	if err != nil {
		_ = p.stop(10 * time.Second)
		return fmt.Errorf("kube-apiserver not ready on %s: %w\n%s", k.Server, err, p.tail(30))
	}
	k.api = p
	return nil
}

// readyz is nil when the API server's /readyz answers "ok".
func (k *Kube) readyz() error {
	b, code, err := k.do(http.MethodGet, "/readyz", "", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
		return fmt.Errorf("/readyz: %d %s", code, firstLines(b, 5))
	}
	return nil
}

// StopAPIServer stops the API server (SIGTERM, then SIGKILL after 20 s) and
// keeps etcd, so that StartAPIServer brings the same data back. While it is
// stopped, connections to Server are refused (through ServeIn's relays: they
// are accepted and closed at once).
func (k *Kube) StopAPIServer() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.api == nil {
		return nil
	}
	err := k.api.stopAfter(3*time.Second, 20*time.Second)
	k.api = nil
	return err
}

// stop stops the API server, then etcd.
func (k *Kube) stop() error {
	errs := []error{k.StopAPIServer()}
	if k.etcd != nil {
		errs = append(errs, k.etcd.stop(10*time.Second))
	}
	k.client.CloseIdleConnections()
	return errors.Join(errs...)
}

// do sends an admin request to the API server and returns the body and
// status. body, when not nil, is sent as contentType.
func (k *Kube) do(method, path, contentType string, body []byte) ([]byte, int, error) {
	req, err := http.NewRequest(method, k.Server+path, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+k.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

// call is do with a JSON body (nil: none) that expects a 2xx answer and
// decodes it into out (when not nil).
func (k *Kube) call(method, path, contentType string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	b, code, err := k.do(method, path, contentType, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if code/100 != 2 {
		return &APIError{Method: method, Path: path, Code: code, Body: firstLines(b, 5)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// APIError is an API server's answer other than 2xx.
type APIError struct {
	Method, Path string
	Code         int
	Body         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Code, e.Body)
}

// firstLines returns at most n lines of b.
func firstLines(b []byte, n int) string {
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// Kubectl runs kubectl as the admin and returns its standard output; the
// error carries the command and its standard error.
func (k *Kube) Kubectl(args ...string) (string, error) {
	return k.kubectlAs(k.Kubeconfig, "", args...)
}

// kubectlAs runs kubectl with a kubeconfig and optional standard input.
func (k *Kube) kubectlAs(kubeconfig, stdin string, args ...string) (string, error) {
	argv := append([]string{k.kubectl, "--kubeconfig", kubeconfig, "--cache-dir", filepath.Join(k.Dir, "kubectl-cache")}, args...)
	return runOut(stdin, argv...)
}

// Apply applies a manifest (YAML or JSON, one or more documents) as the
// admin: `kubectl apply -f -`.
func (k *Kube) Apply(manifest string) error {
	_, err := k.kubectlAs(k.Kubeconfig, manifest, "apply", "-f", "-")
	return err
}

// DryRun submits a manifest with server-side dry-run (`kubectl apply
// --dry-run=server`): the API server validates and admits every object,
// defaults included, and stores nothing.
func (k *Kube) DryRun(manifest string) error {
	_, err := k.kubectlAs(k.Kubeconfig, manifest, "apply", "--dry-run=server", "-f", "-")
	return err
}

// UserKubeconfig returns the path of a kubeconfig for one of KubeUsers (no
// groups but system:authenticated, so only what RBAC grants it). Any other
// name is an error: the API server reads its token file only at start.
func (k *Kube) UserKubeconfig(user string) (string, error) {
	tok, ok := k.tokens[user]
	if !ok || user == "admin" {
		return "", fmt.Errorf("user %q: not one of KubeUsers %v (the API server's token file is fixed at start)", user, KubeUsers)
	}
	p := filepath.Join(k.Dir, user+".kubeconfig")
	if err := writeKubeconfig(p, k.Server, user, tok); err != nil {
		return "", err
	}
	return p, nil
}

// ServiceAccountKubeconfig returns the path of a kubeconfig with a token
// for the ServiceAccount namespace/name (created if missing), from the
// TokenRequest API (valid for an hour): the identity a DaemonSet's pods
// have, so a manifest's own ClusterRoleBinding can be tested as it is.
func (k *Kube) ServiceAccountKubeconfig(namespace, name string) (string, error) {
	if _, err := k.Kubectl("get", "namespace", namespace); err != nil {
		if _, err := k.Kubectl("create", "namespace", namespace); err != nil {
			return "", err
		}
	}
	if _, err := k.Kubectl("-n", namespace, "get", "serviceaccount", name); err != nil {
		if _, err := k.Kubectl("-n", namespace, "create", "serviceaccount", name); err != nil {
			return "", err
		}
	}
	tok, err := k.Kubectl("-n", namespace, "create", "token", name, "--duration=1h")
	if err != nil {
		return "", err
	}
	p := filepath.Join(k.Dir, "sa-"+namespace+"-"+name+".kubeconfig")
	if err := writeKubeconfig(p, k.Server, "system:serviceaccount:"+namespace+":"+name, strings.TrimSpace(tok)); err != nil {
		return "", err
	}
	return p, nil
}

// KubectlAs runs kubectl with another kubeconfig (UserKubeconfig,
// ServiceAccountKubeconfig).
func (k *Kube) KubectlAs(kubeconfig string, args ...string) (string, error) {
	return k.kubectlAs(kubeconfig, "", args...)
}

var nonName = regexp.MustCompile(`[^a-z0-9.-]+`)

// BindClusterRole binds a ClusterRole to a user (one of KubeUsers, or any
// name) or, for "system:serviceaccount:NS:NAME", to that ServiceAccount,
// with a ClusterRoleBinding named drv-<user>-<role>.
func (k *Kube) BindClusterRole(user, role string) error {
	subject := map[string]string{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}
	if rest, ok := strings.CutPrefix(user, "system:serviceaccount:"); ok {
		ns, name, ok := strings.Cut(rest, ":")
		if !ok {
			return fmt.Errorf("bind %s: want system:serviceaccount:NAMESPACE:NAME", user)
		}
		subject = map[string]string{"kind": "ServiceAccount", "namespace": ns, "name": name}
	}
	binding := map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1",
		"kind":       "ClusterRoleBinding",
		"metadata":   map[string]any{"name": strings.Trim(nonName.ReplaceAllString(strings.ToLower("drv-"+user+"-"+role), "-"), "-")},
		"roleRef":    map[string]string{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
		"subjects":   []any{subject},
	}
	if err := k.call(http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "application/json", binding, nil); err != nil {
		return fmt.Errorf("bind cluster role %s to %s: %w", role, user, err)
	}
	return nil
}

// NodeOptions describe a Node object made by CreateNode.
type NodeOptions struct {
	// PodCIDRs become spec.podCIDR (the first) and spec.podCIDRs. They can
	// only be set when the Node is created (no controller-manager runs to
	// allocate them, and the API server refuses to change them later).
	PodCIDRs []string
	// InternalIP, when set, is written to status.addresses (with the
	// Hostname) through the status subresource.
	InternalIP string
	// Labels and Annotations are the Node's metadata.
	Labels, Annotations map[string]string
}

// CreateNode creates a Node object, as a kubelet registering would but
// without one: no conditions, no lease. Nothing marks it NotReady or evicts
// anything from it, since no controller-manager runs.
func (k *Kube) CreateNode(name string, o NodeOptions) error {
	meta := map[string]any{"name": name}
	if len(o.Labels) > 0 {
		meta["labels"] = o.Labels
	}
	if len(o.Annotations) > 0 {
		meta["annotations"] = o.Annotations
	}
	spec := map[string]any{}
	if len(o.PodCIDRs) > 0 {
		spec["podCIDR"] = o.PodCIDRs[0]
		spec["podCIDRs"] = o.PodCIDRs
	}
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec}
	if err := k.call(http.MethodPost, "/api/v1/nodes", "application/json", node, nil); err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	if o.InternalIP == "" {
		return nil
	}
	patch := map[string]any{"status": map[string]any{"addresses": []map[string]string{
		{"type": "InternalIP", "address": o.InternalIP},
		{"type": "Hostname", "address": name},
	}}}
	if err := k.call(http.MethodPatch, "/api/v1/nodes/"+name+"/status", "application/merge-patch+json", patch, nil); err != nil {
		return fmt.Errorf("node %s: set status addresses: %w", name, err)
	}
	return nil
}

// DeleteNode deletes a Node object. A Node that is not there is an error.
func (k *Kube) DeleteNode(name string) error {
	if err := k.call(http.MethodDelete, "/api/v1/nodes/"+name, "", nil, nil); err != nil {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	return nil
}

// Node is the part of a Node object the helpers read.
type Node struct {
	Metadata struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	} `json:"spec"`
	Status struct {
		Addresses []struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"addresses"`
		Conditions []Condition `json:"conditions"`
	} `json:"status"`
}

// Condition is a Node's or Pod's status condition.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// GetNode reads a Node object.
func (k *Kube) GetNode(name string) (*Node, error) {
	var n Node
	if err := k.call(http.MethodGet, "/api/v1/nodes/"+name, "", nil, &n); err != nil {
		return nil, fmt.Errorf("get node %s: %w", name, err)
	}
	return &n, nil
}

// NodeReady reports whether the Node's Ready condition is True.
func (k *Kube) NodeReady(name string) (bool, error) {
	n, err := k.GetNode(name)
	if err != nil {
		return false, err
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True", nil
		}
	}
	return false, nil
}

// Pod is the part of a Pod object the helpers read.
type Pod struct {
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase      string      `json:"phase"`
		PodIP      string      `json:"podIP"`
		Conditions []Condition `json:"conditions"`
	} `json:"status"`
}

// GetPod reads a Pod object.
func (k *Kube) GetPod(namespace, name string) (*Pod, error) {
	var p Pod
	if err := k.call(http.MethodGet, "/api/v1/namespaces/"+namespace+"/pods/"+name, "", nil, &p); err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return &p, nil
}

// PodRunning reports whether the Pod's phase is Running, and its IP.
func (k *Kube) PodRunning(namespace, name string) (bool, string, error) {
	p, err := k.GetPod(namespace, name)
	if err != nil {
		return false, "", err
	}
	return p.Status.Phase == "Running", p.Status.PodIP, nil
}
