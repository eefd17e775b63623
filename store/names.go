package store

import (
	"fmt"
	"strings"
	"sync"

	"github.com/crivm/crivm/internal/errdefs"
)

// SandboxName is the name the kubelet gives a pod sandbox, as CRI-O and
// containerd build it: k8s_POD_<name>_<namespace>_<uid>_<attempt>.
func SandboxName(m PodMetadata) string {
	return strings.Join([]string{"k8s", "POD", m.Name, m.Namespace, m.UID, fmt.Sprint(m.Attempt)}, "_")
}

// ContainerName is k8s_<container>_<pod>_<namespace>_<uid>_<attempt>.
func ContainerName(c ContainerMetadata, pod PodMetadata) string {
	return strings.Join([]string{"k8s", c.Name, pod.Name, pod.Namespace, pod.UID, fmt.Sprint(c.Attempt)}, "_")
}

// names is the registrar: one holder per name.
type names struct {
	mu   sync.Mutex
	byID map[string]string // name -> holder id; guarded by mu
}

func newNames() *names { return &names{byID: map[string]string{}} }

// reserve gives name to id. It is idempotent for the same id; a name held
// by another id is AlreadyExists naming the holder.
func (n *names) reserve(name, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if holder, ok := n.byID[name]; ok && holder != id {
		return errdefs.AlreadyExists("name %q is reserved for %s", name, holder)
	}
	n.byID[name] = id
	return nil
}

// release frees name if id holds it.
func (n *names) release(name, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byID[name] == id {
		delete(n.byID, name)
	}
}
