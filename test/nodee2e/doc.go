// Package nodee2e runs a real one-node Kubernetes cluster against crivm:
// Debian's etcd, kube-apiserver and kubelet v1.37.2 (built from the Go module
// proxy by scripts/k8s-build.sh), all on loopback, no scheduler and no
// controller-manager. Its tests build only with the tag nodee2e, because the
// kubelet build alone takes 8-14 minutes on the project's machines; run them
// with `make node-e2e` (scripts/node-e2e.sh), which writes the results into
// docs/conformance.md.
package nodee2e
