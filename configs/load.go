package configs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Default locations, used when LoadOptions leaves them empty.
const (
	DefaultConfigFile = "/etc/crivm/crivm.conf"
	DefaultDropInDir  = "/etc/crivm/crivm.conf.d"
)

// Override sets one dotted key (e.g. "crivm.root") from outside the files.
// Source names it in errors, e.g. "flag --root".
type Override struct {
	Key    string
	Value  any
	Source string
}

// LoadOptions says where the configuration comes from.
type LoadOptions struct {
	// File is the main config file. Empty: DefaultConfigFile if it exists.
	// A File that was named explicitly must exist.
	File         string
	FileExplicit bool
	// DropInDir holds *.conf files merged after File in lexical order.
	// Empty: DefaultDropInDir if it exists.
	DropInDir         string
	DropInDirExplicit bool
	Overrides         []Override
}

// Loaded is a validated configuration and where each key came from.
type Loaded struct {
	Config *Config
	// Files are the files merged, in order.
	Files []string
	// Source maps a dotted key to the file or flag that set it last. Keys
	// that kept their default are absent.
	Source map[string]string
}

// FileError is a problem in one source of configuration.
type FileError struct {
	File string // a path, "flag --x", or "defaults"
	Line int    // 0 when unknown
	Key  string // dotted key, empty when the file did not parse at all
	Msg  string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString("config ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %s", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

type fileConfig struct {
	Crivm Config `toml:"crivm"`
}

// Load merges the defaults, the main file, the drop-ins and the overrides,
// then validates the result.
func Load(opts LoadOptions) (*Loaded, error) {
	base, err := parseMap("defaults", []byte(DefaultTemplate))
	if err != nil {
		return nil, err
	}
	files, err := opts.files()
	if err != nil {
		return nil, err
	}
	source := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, &FileError{File: f, Msg: fmt.Sprintf("reading: %v", err)}
		}
		if err := decodeStrict(f, data); err != nil {
			return nil, err
		}
		m, err := parseMap(f, data)
		if err != nil {
			return nil, err
		}
		merge(base, m, "", f, source)
	}
	for _, o := range opts.Overrides {
		setDotted(base, o.Key, o.Value)
		source[o.Key] = o.Source
	}

	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(base); err != nil {
		return nil, fmt.Errorf("encoding merged config: %w", err)
	}
	var fc fileConfig
	md, err := toml.Decode(buf.String(), &fc)
	if err != nil {
		// Only overrides can get here: every file was decoded strictly.
		return nil, &FileError{File: "overrides", Msg: err.Error()}
	}
	if u := md.Undecoded(); len(u) > 0 {
		k := u[0].String()
		return nil, &FileError{File: sourceOf(source, k), Key: k, Msg: "unknown key"}
	}
	cfg := &fc.Crivm
	for _, h := range cfg.Runtime.Runtimes {
		h.fillDefaults()
	}
	if err := cfg.Validate(); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			return nil, &FileError{File: sourceOf(source, ke.Key), Key: ke.Key, Msg: ke.Reason}
		}
		return nil, err
	}
	return &Loaded{Config: cfg, Files: files, Source: source}, nil
}

// Defaults returns the default configuration: the embedded template.
func Defaults() *Config {
	l, err := Load(LoadOptions{File: os.DevNull, FileExplicit: true, DropInDir: os.DevNull})
	if err != nil {
		panic(fmt.Sprintf("embedded default config is invalid: %v", err))
	}
	return l.Config
}

func (o LoadOptions) files() ([]string, error) {
	var files []string
	switch {
	case o.File == os.DevNull:
	case o.File != "":
		if _, err := os.Stat(o.File); err != nil {
			return nil, &FileError{File: o.File, Msg: fmt.Sprintf("reading: %v", err)}
		}
		files = append(files, o.File)
	default:
		if _, err := os.Stat(DefaultConfigFile); err == nil {
			files = append(files, DefaultConfigFile)
		}
	}
	dir := o.DropInDir
	if dir == "" {
		dir = DefaultDropInDir
	}
	if dir == os.DevNull {
		return files, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !o.DropInDirExplicit {
			return files, nil
		}
		return nil, &FileError{File: dir, Msg: fmt.Sprintf("reading drop-in dir: %v", err)}
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, filepath.Join(dir, n))
	}
	return files, nil
}

// decodeStrict decodes one file on its own so that type errors and unknown
// keys are reported against that file, with a line where the parser has one.
func decodeStrict(file string, data []byte) error {
	var fc fileConfig
	md, err := toml.Decode(string(data), &fc)
	if err != nil {
		return parseError(file, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		return &FileError{File: file, Key: keys[0], Msg: unknownKeyMsg(keys)}
	}
	if k, want := MiscasedKey(md.Keys(), reflect.TypeFor[fileConfig]()); k != nil {
		return &FileError{File: file, Key: k.String(), Msg: fmt.Sprintf("unknown key (keys are case-sensitive: write %s)", want)}
	}
	return nil
}

// MiscasedKey returns the first of keys (a file's, decoded into t) that
// names a field of t in another case than its toml tag, up to that field,
// and that key as the tag spells it. BurntSushi/toml decodes "Root" into
// the root field too, in an order that is random when both are given (it
// ranges over a map), and merge keeps "Root" and "root" apart: such keys
// are refused. Keys below a map (handler names, registries) are names,
// not fields.
func MiscasedKey(keys []toml.Key, t reflect.Type) (toml.Key, toml.Key) {
	for _, k := range keys {
		typ := t
	parts:
		for i, part := range k {
			for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
				typ = typ.Elem()
			}
			switch typ.Kind() {
			case reflect.Map:
				typ = typ.Elem()
				continue
			case reflect.Struct:
			default:
				break parts
			}
			var folded *reflect.StructField
			for j := 0; j < typ.NumField(); j++ {
				f := typ.Field(j)
				name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
				if name == part {
					folded = nil
					typ = f.Type
					continue parts
				}
				if folded == nil && strings.EqualFold(name, part) {
					folded = &f
				}
			}
			if folded != nil {
				name, _, _ := strings.Cut(folded.Tag.Get("toml"), ",")
				return k[:i+1], append(slices.Clone(k[:i]), name)
			}
			break
		}
	}
	return nil, nil
}

func unknownKeyMsg(keys []string) string {
	if len(keys) == 1 {
		return "unknown key"
	}
	return fmt.Sprintf("unknown key (also unknown: %s)", strings.Join(keys[1:], ", "))
}

func parseError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &FileError{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	if m := decodeErrRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FileError{File: file, Line: line, Key: m[2], Msg: m[3]}
	}
	return &FileError{File: file, Msg: err.Error()}
}

// decodeErrRE matches the type errors BurntSushi/toml returns as plain errors.
var decodeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

func parseMap(file string, data []byte) (map[string]any, error) {
	m := map[string]any{}
	if _, err := toml.Decode(string(data), &m); err != nil {
		return nil, parseError(file, err)
	}
	return m, nil
}

// merge copies src into dst key by key. Tables merge recursively; any other
// value (arrays included) replaces what was there. source records, per leaf
// key, the file that set it.
func merge(dst, src map[string]any, prefix, file string, source map[string]string) {
	for k, v := range src {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sm, ok := v.(map[string]any); ok {
			dm, ok := dst[k].(map[string]any)
			if !ok {
				dm = map[string]any{}
				dst[k] = dm
			}
			merge(dm, sm, key, file, source)
			continue
		}
		dst[k] = v
		source[key] = file
	}
}

func setDotted(m map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// sourceOf finds who set key, or the nearest enclosing table's setter. An
// element of an array (key[N]) is set by whoever set the array.
func sourceOf(source map[string]string, key string) string {
	if i := strings.LastIndex(key, "["); i > 0 && strings.HasSuffix(key, "]") {
		key = key[:i]
	}
	for k := key; k != ""; {
		if s, ok := source[k]; ok {
			return s
		}
		i := strings.LastIndex(k, ".")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	// A table key (e.g. a handler name) maps to the first leaf under it.
	var under []string
	for k := range source {
		if strings.HasPrefix(k, key+".") {
			under = append(under, k)
		}
	}
	if len(under) > 0 {
		slices.Sort(under)
		return source[under[0]]
	}
	return "defaults"
}
