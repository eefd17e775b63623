package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// confExtensions are the file name extensions libcni and the kubelet
// recognise as network configurations.
var confExtensions = []string{".conflist", ".conf", ".json"}

// Network describes the default network a Manager attaches pods to.
type Network struct {
	Name    string   // the network name from the config
	File    string   // the config file it was loaded from
	Plugins []string // plugin types, in ADD order
}

// loadedConfig is one load of the config directory. It is immutable once
// built; a reload replaces it.
type loadedConfig struct {
	fingerprint string
	file        string
	list        *libcni.NetworkConfigList
	err         error // set when no usable config exists; list is then nil
}

// defaultNetwork returns the default network: the first file, in lexical
// order of names, among ConfDir's *.conflist, *.conf and *.json files that
// parses. Files that do not parse are skipped with a warning, as CRI-O does.
// The result is cached and reloaded when the set of names, a size or a
// modification time changes.
func (m *Manager) defaultNetwork(ctx context.Context) (*loadedConfig, error) {
	files, err := libcni.ConfFiles(m.opts.ConfDir, confExtensions)
	if err != nil {
		return nil, fmt.Errorf("listing CNI configs in %s: %w", m.opts.ConfDir, err)
	}
	sort.Strings(files)
	fp := fingerprint(files)

	m.confMu.Lock()
	defer m.confMu.Unlock()
	if m.conf != nil && m.conf.fingerprint == fp {
		return m.conf, m.conf.err
	}
	lc := &loadedConfig{fingerprint: fp}
	var skipped []string
	for _, f := range files {
		list, err := loadFile(f)
		if err != nil {
			log.G(ctx).Warn("skipping CNI network config", "file", f, "error", err)
			skipped = append(skipped, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		lc.file, lc.list = f, list
		break
	}
	if lc.list == nil {
		msg := fmt.Sprintf("no CNI network config in %s", m.opts.ConfDir)
		if len(skipped) > 0 {
			msg += " (skipped " + strings.Join(skipped, "; ") + ")"
		}
		lc.err = errdefs.FailedPrecondition("%s", msg)
	} else if m.conf == nil || m.conf.file != lc.file || m.conf.list == nil || m.conf.list.Name != lc.list.Name {
		log.G(ctx).Info("CNI default network", "network", lc.list.Name, "file", lc.file)
	}
	m.conf = lc
	return lc, lc.err
}

// loadFile loads one config file as a network list. A .conf or .json file
// holds a single plugin config, or a list for those who name lists .conf.
func loadFile(f string) (*libcni.NetworkConfigList, error) {
	if strings.HasSuffix(f, ".conflist") {
		return libcni.ConfListFromFile(f)
	}
	conf, err := libcni.ConfFromFile(f)
	if err != nil {
		if list, lerr := libcni.ConfListFromFile(f); lerr == nil {
			return list, nil
		}
		return nil, err
	}
	return libcni.ConfListFromConf(conf)
}

// fingerprint summarises names, sizes and modification times of files. Files
// that vanish between listing and stat count as changed content.
func fingerprint(files []string) string {
	var b strings.Builder
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			fmt.Fprintf(&b, "%s:missing\n", f)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d\n", f, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

// checkPlugins requires every plugin binary of list in the plugin dirs.
func (m *Manager) checkPlugins(lc *loadedConfig) error {
	var missing []string
	for _, p := range lc.list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, m.opts.PluginDirs); err != nil {
			missing = append(missing, p.Network.Type)
		}
	}
	if len(missing) > 0 {
		return errdefs.FailedPrecondition("CNI network %q (%s): plugin %s not found in %s",
			lc.list.Name, lc.file, strings.Join(missing, ", "), strings.Join(m.opts.PluginDirs, ":"))
	}
	return nil
}

// Network returns the default network the next Setup will use.
func (m *Manager) Network(ctx context.Context) (Network, error) {
	lc, err := m.defaultNetwork(ctx)
	if err != nil {
		return Network{}, err
	}
	n := Network{Name: lc.list.Name, File: lc.file}
	for _, p := range lc.list.Plugins {
		n.Plugins = append(n.Plugins, p.Network.Type)
	}
	return n, nil
}

// Status reports whether pods can be networked: nil when ConfDir holds a
// usable network config and all its plugin binaries exist, an
// ErrFailedPrecondition error naming what is missing otherwise.
func (m *Manager) Status(ctx context.Context) error {
	lc, err := m.defaultNetwork(ctx)
	if err != nil {
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
		return errdefs.FailedPrecondition("reading CNI configs: %w", err)
	}
	return m.checkPlugins(lc)
}
