package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// API is the part of the Kubernetes API the membership uses: Nodes, listed,
// watched and patched. *Client is the real one; tests use an in-memory fake.
type API interface {
	ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	// PatchNode patches the Node name, or its subresource ("status") if
	// not empty.
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, subresource string) error
}

// Client is API over a REST client for core/v1 only. Not the typed
// clientset: it would link every API group into the binary (29 MB
// stripped against 14 MB, measured), and drover reads one resource.
type Client struct {
	rc    *rest.RESTClient // core/v1
	netrc *rest.RESTClient // networking.k8s.io/v1 (network policy)
}

type restClient = *rest.RESTClient

// scheme decodes core/v1 objects and the meta/v1 options and watch events.
var scheme = runtime.NewScheme()

func init() {
	if err := corev1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := networkingv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
	metav1.AddToGroupVersion(scheme, networkingv1.SchemeGroupVersion)
}

// NewClient connects to the API server the kubeconfig file names, or, with
// an empty path, to the one of the pod this runs in (its service account).
func NewClient(kubeconfig string) (*Client, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config (set cluster.kubernetes.kubeconfig outside a pod): %w", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	}
	base := rest.CopyConfig(cfg)
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	cfg.UserAgent = "drover"
	// One watch and a patch now and then: the defaults (5 QPS, burst 10)
	// are ample, and keep a confused daemon from loading the server.
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ncfg := rest.CopyConfig(base)
	ncfg.GroupVersion = &networkingv1.SchemeGroupVersion
	ncfg.APIPath = "/apis"
	ncfg.NegotiatedSerializer = cfg.NegotiatedSerializer
	ncfg.UserAgent = "drover"
	netrc, err := rest.RESTClientFor(ncfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (networking.k8s.io/v1): %w", err)
	}
	return &Client{rc: rc, netrc: netrc}, nil
}

var paramCodec = runtime.NewParameterCodec(scheme)

// ListNodes implements API.
func (c *Client) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	err := c.rc.Get().Resource("nodes").VersionedParams(&opts, paramCodec).Do(ctx).Into(out)
	return out, err
}

// WatchNodes implements API.
func (c *Client) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rc.Get().Resource("nodes").VersionedParams(&opts, paramCodec).Watch(ctx)
}

// PatchNode implements API.
func (c *Client) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, subresource string) error {
	req := c.rc.Patch(pt).Resource("nodes").Name(name).Body(data)
	if subresource != "" {
		req = req.SubResource(subresource)
	}
	return req.Do(ctx).Error()
}

// Close drops the client's idle connections to the API server (each holds
// two goroutines until the server or a timeout closes it).
func (c *Client) Close() {
	c.rc.Client.CloseIdleConnections()
	c.netrc.Client.CloseIdleConnections()
}
