package kube

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// errDown is what fakeAPI answers while the server is away.
var errDown = errors.New("fake API server down")

// fakeAPI is an in-memory API server holding Nodes.
type fakeAPI struct {
	mu       sync.Mutex
	nodes    map[string]*corev1.Node
	rv       int
	watchers []*watch.RaceFreeFakeWatcher
	down     bool
	patches  int
}

func newFakeAPI() *fakeAPI { return &fakeAPI{nodes: map[string]*corev1.Node{}} }

func (f *fakeAPI) bump(n *corev1.Node) {
	f.rv++
	n.ResourceVersion = strconv.Itoa(f.rv)
}

func (f *fakeAPI) send(t watch.EventType, n *corev1.Node) {
	for _, w := range f.watchers {
		if !w.IsStopped() {
			w.Action(t, n.DeepCopy())
		}
	}
}

// put creates or replaces a Node.
func (f *fakeAPI) put(n *corev1.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n = n.DeepCopy()
	_, exists := f.nodes[n.Name]
	if !exists && n.UID == "" {
		n.UID = types.UID("uid-" + n.Name + "-" + strconv.Itoa(f.rv))
	}
	f.bump(n)
	f.nodes[n.Name] = n
	if exists {
		f.send(watch.Modified, n)
	} else {
		f.send(watch.Added, n)
	}
}

func (f *fakeAPI) del(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	if !ok {
		return
	}
	delete(f.nodes, name)
	f.bump(n)
	f.send(watch.Deleted, n)
}

func (f *fakeAPI) get(name string) *corev1.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.nodes[name]; ok {
		return n.DeepCopy()
	}
	return nil
}

// setDown takes the server away (watches end, requests fail) or back.
func (f *fakeAPI) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	if down {
		for _, w := range f.watchers {
			if !w.IsStopped() {
				w.Stop()
			}
		}
		f.watchers = nil
	}
}

func (f *fakeAPI) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	l := &corev1.NodeList{}
	l.ResourceVersion = strconv.Itoa(f.rv)
	for _, n := range f.nodes {
		l.Items = append(l.Items, *n.DeepCopy())
	}
	return l, nil
}

func (f *fakeAPI) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	w := watch.NewRaceFreeFake()
	f.watchers = append(f.watchers, w)
	if opts.SendInitialEvents != nil && *opts.SendInitialEvents {
		// A watch-list (client-go's WatchListClient): every Node, then a
		// bookmark that ends the initial events, as the API server does.
		for _, n := range f.nodes {
			w.Add(n.DeepCopy())
		}
		bm := &corev1.Node{}
		bm.ResourceVersion = strconv.Itoa(f.rv)
		bm.Annotations = map[string]string{metav1.InitialEventsAnnotationKey: "true"}
		w.Action(watch.Bookmark, bm)
	}
	return w, nil
}

func (f *fakeAPI) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, sub string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errDown
	}
	n, ok := f.nodes[name]
	if !ok {
		return errors.New("nodes \"" + name + "\" not found")
	}
	n = n.DeepCopy()
	f.patches++
	switch {
	case sub == "" && pt == types.MergePatchType:
		var p struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(data, &p); err != nil {
			return err
		}
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		for k, v := range p.Metadata.Annotations {
			n.Annotations[k] = v
		}
	case sub == "status" && pt == types.StrategicMergePatchType:
		var p struct {
			Status struct {
				Conditions []corev1.NodeCondition `json:"conditions"`
			} `json:"status"`
		}
		if err := json.Unmarshal(data, &p); err != nil {
			return err
		}
	next:
		for _, c := range p.Status.Conditions {
			for i := range n.Status.Conditions {
				if n.Status.Conditions[i].Type == c.Type {
					n.Status.Conditions[i] = c
					continue next
				}
			}
			n.Status.Conditions = append(n.Status.Conditions, c)
		}
	default:
		return errors.New("fake: unsupported patch " + string(pt) + " " + sub)
	}
	f.bump(n)
	f.nodes[name] = n
	f.send(watch.Modified, n)
	return nil
}
