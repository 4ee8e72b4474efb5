// Package kubernetes holds drover's Kubernetes manifests (the YAML files
// beside this one: Namespace, ServiceAccount, ClusterRole and binding,
// ConfigMap, DaemonSet, kustomization) and, in its tests only, their
// offline checks: every manifest decodes strictly into its k8s.io/api type,
// the DaemonSet asks for no more than drover needs and mounts what drover's
// configuration points at, the ConfigMap's drover.yaml and conflist pass
// drover's own parsers, and the init container's install step, run as the
// container would run it, leaves a plugin that answers CNI VERSION.
//
// The package has no code: nothing here is linked into the drover binary,
// and the k8s.io modules are test dependencies only. Installation:
// docs/kubernetes.md.
package kubernetes
