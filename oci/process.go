package oci

import (
	"path"
	"strings"

	imgspec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// defaultPathEnv is set when neither the image nor the CRI config sets PATH.
const defaultPathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// processArgs merges the CRI command and args with the image's Entrypoint
// and Cmd the Kubernetes way: command replaces Entrypoint and drops Cmd;
// args replaces Cmd.
func processArgs(command, args []string, img *imgspec.ImageConfig) ([]string, error) {
	img = imageConfig(img)
	var out []string
	switch {
	case len(command) > 0:
		out = append(append(out, command...), args...)
	case len(args) > 0:
		out = append(append(out, img.Entrypoint...), args...)
	default:
		out = append(append(out, img.Entrypoint...), img.Cmd...)
	}
	if len(out) == 0 || out[0] == "" {
		return nil, errdefs.InvalidArgument("no command specified: neither the container config nor the image names one")
	}
	return out, nil
}

// processArgsSandbox is the pause image's Entrypoint and Cmd, or /pause.
func processArgsSandbox(img *imgspec.ImageConfig) []string {
	img = imageConfig(img)
	args := append(append([]string(nil), img.Entrypoint...), img.Cmd...)
	if len(args) == 0 {
		return []string{"/pause"}
	}
	return args
}

// workingDir is the CRI working_dir, else the image's WorkingDir, else "/".
func workingDir(criDir string, img *imgspec.ImageConfig) (string, error) {
	dir := firstNonEmpty(criDir, imageConfig(img).WorkingDir, "/")
	if !path.IsAbs(dir) {
		return "", errdefs.InvalidArgument("working directory %q is not absolute", dir)
	}
	return path.Clean(dir), nil
}

// mergeEnv merges "KEY=VALUE" lists; a later entry replaces an earlier one
// with the same key in place. PATH is added when no list sets it.
func mergeEnv(lists ...[]string) []string {
	var out []string
	index := map[string]int{}
	for _, list := range lists {
		for _, kv := range list {
			k, _, _ := strings.Cut(kv, "=")
			if k == "" {
				continue
			}
			if i, ok := index[k]; ok {
				out[i] = kv
				continue
			}
			index[k] = len(out)
			out = append(out, kv)
		}
	}
	if _, ok := index["PATH"]; !ok {
		out = append(out, defaultPathEnv)
	}
	return out
}
