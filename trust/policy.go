package trust

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/crivm/crivm/configs"
)

// Policy is an ordered list of trust rules; the first rule that matches a pod
// decides its trust. A Policy is immutable once loaded.
type Policy struct {
	rules []*rule
	// hasImages is set when some rule matches on image_registries; only then
	// are a pod's images parsed.
	hasImages bool
}

// ruleNamed is the rule called name, nil if there is none.
func (p *Policy) ruleNamed(name string) *rule {
	if p == nil || name == "" {
		return nil
	}
	for _, r := range p.rules {
		if r.name == name {
			return r
		}
	}
	return nil
}

// Len is the number of rules.
func (p *Policy) Len() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

type rule struct {
	name    string
	file    string
	line    int
	trusted bool
	handler string // configured name, aliases resolved; "" for none
	match   matchSpec
	// allowHostPaths are prefixes below which the untrusted pods this rule
	// classifies may mount host paths (see the mount policy).
	allowHostPaths []string
}

func (r *rule) reason() string { return fmt.Sprintf("rule %q (file %s)", r.name, r.file) }

type ruleFile struct {
	Rule []ruleSpec `toml:"rule"`
}

type ruleSpec struct {
	Name           string    `toml:"name"`
	Trust          string    `toml:"trust"`
	Handler        string    `toml:"handler"`
	AllowHostPaths []string  `toml:"allow_host_paths"`
	Match          matchSpec `toml:"match"`
}

// matchSpec holds a rule's conditions. All given conditions must hold.
type matchSpec struct {
	Namespaces      []string          `toml:"namespaces"`
	Labels          map[string]string `toml:"labels"`
	Annotations     map[string]string `toml:"annotations"`
	Privileged      *bool             `toml:"privileged"`
	HostNetwork     *bool             `toml:"host_network"`
	HostPID         *bool             `toml:"host_pid"`
	HostIPC         *bool             `toml:"host_ipc"`
	ImageRegistries []string          `toml:"image_registries"`
}

// PolicyError is a problem in one policy file.
type PolicyError struct {
	File string
	Line int    // 0 when unknown
	Rule string // `"name"`, or `#N` (1-based, within File) for a rule without a name
	Key  string // relative to the rule when Rule is set, e.g. match.namespaces
	Msg  string
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	b.WriteString("trust policy ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Rule != "" {
		fmt.Fprintf(&b, ": rule %s", e.Rule)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %s", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// LoadPolicy reads the rules in path: a directory of *.toml files, loaded in
// lexical order with their rules concatenated in that order, or one file.
// The empty path is the empty policy. Handlers named by rules are checked
// against cfg.
func LoadPolicy(path string, cfg *configs.Config) (*Policy, error) {
	p := &Policy{}
	if path == "" {
		return p, nil
	}
	files, err := policyFiles(path)
	if err != nil {
		return nil, err
	}
	seen := map[string]*rule{}
	for _, f := range files {
		rules, err := loadPolicyFile(f, cfg)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			if prev, dup := seen[r.name]; dup {
				return nil, &PolicyError{File: f, Line: r.line, Rule: strconv.Quote(r.name), Key: "name",
					Msg: fmt.Sprintf("duplicate rule name (first defined in %s:%d)", prev.file, prev.line)}
			}
			seen[r.name] = r
			p.hasImages = p.hasImages || len(r.match.ImageRegistries) > 0
		}
		p.rules = append(p.rules, rules...)
	}
	return p, nil
}

func policyFiles(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, &PolicyError{File: p, Msg: fmt.Sprintf("reading: %v", err)}
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return nil, &PolicyError{File: p, Msg: fmt.Sprintf("reading directory: %v", err)}
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".toml") {
			files = append(files, filepath.Join(p, e.Name()))
		}
	}
	return files, nil
}

func loadPolicyFile(file string, cfg *configs.Config) ([]*rule, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &PolicyError{File: file, Msg: fmt.Sprintf("reading: %v", err)}
	}
	loc := newLocator(data)
	var rf ruleFile
	md, err := toml.Decode(string(data), &rf)
	if err != nil {
		return nil, loc.decodeError(file, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		e := loc.keyError(file, u[0].String(), "unknown key", rf.Rule)
		if len(u) > 1 {
			rest := make([]string, len(u)-1)
			for i, k := range u[1:] {
				rest[i] = k.String()
			}
			e.Msg += fmt.Sprintf(" (also unknown: %s)", strings.Join(rest, ", "))
		}
		return nil, e
	}
	if k, want := configs.MiscasedKey(md.Keys(), reflect.TypeFor[ruleFile]()); k != nil {
		return nil, loc.keyError(file, k.String(), fmt.Sprintf("unknown key (keys are case-sensitive: write %s)", want[len(want)-1]), rf.Rule)
	}
	rules := make([]*rule, 0, len(rf.Rule))
	for i, spec := range rf.Rule {
		r, key, msg := compileRule(spec, cfg)
		if msg != "" {
			return nil, &PolicyError{File: file, Line: loc.line(i, key), Rule: ruleID(rf.Rule, i), Key: key, Msg: msg}
		}
		r.file, r.line = file, loc.line(i, "")
		rules = append(rules, r)
	}
	return rules, nil
}

// compileRule checks one rule. On a problem it returns the key (relative to
// the rule) and a message.
func compileRule(s ruleSpec, cfg *configs.Config) (*rule, string, string) {
	r := &rule{name: s.Name, match: s.Match}
	if s.Name == "" {
		return nil, "name", "must be set"
	}
	switch s.Trust {
	case configs.Trusted:
		r.trusted = true
	case configs.Untrusted:
	case "":
		return nil, "trust", fmt.Sprintf("must be set to %q or %q", configs.Trusted, configs.Untrusted)
	default:
		return nil, "trust", fmt.Sprintf("%q is not one of %s, %s", s.Trust, configs.Trusted, configs.Untrusted)
	}
	if s.Handler != "" {
		name, h, ok := cfg.ResolveHandler(s.Handler)
		if !ok {
			return nil, "handler", fmt.Sprintf("handler %q is not configured (%s)", s.Handler, handlerList(cfg))
		}
		if !r.trusted && h.RuntimeType != configs.RuntimeTypeVM {
			return nil, "handler", fmt.Sprintf("handler %q has runtime_type %q; untrusted pods run only on %q handlers", s.Handler, h.RuntimeType, configs.RuntimeTypeVM)
		}
		r.handler = name
	}
	if s.AllowHostPaths != nil {
		switch {
		case len(s.AllowHostPaths) == 0:
			return nil, "allow_host_paths", "is empty; leave it out instead"
		case r.trusted:
			return nil, "allow_host_paths", "applies to untrusted rules only: the mount policy does not restrict trusted pods"
		}
		for i, a := range s.AllowHostPaths {
			if err := configs.HostPathPrefix(fmt.Sprintf("allow_host_paths[%d]", i), a); err != nil {
				var ke *configs.KeyError
				if errors.As(err, &ke) {
					return nil, "allow_host_paths", fmt.Sprintf("entry %d: %s", i, ke.Reason)
				}
				return nil, "allow_host_paths", err.Error()
			}
		}
		r.allowHostPaths = slices.Clone(s.AllowHostPaths)
	}
	m := s.Match
	lists := []struct {
		key string
		set bool
		n   int
	}{
		{"match.namespaces", m.Namespaces != nil, len(m.Namespaces)},
		{"match.labels", m.Labels != nil, len(m.Labels)},
		{"match.annotations", m.Annotations != nil, len(m.Annotations)},
		{"match.image_registries", m.ImageRegistries != nil, len(m.ImageRegistries)},
	}
	conditions := 0
	for _, l := range lists {
		if l.set && l.n == 0 {
			return nil, l.key, "is empty; leave it out instead"
		}
		conditions += l.n
	}
	for _, b := range []*bool{m.Privileged, m.HostNetwork, m.HostPID, m.HostIPC} {
		if b != nil {
			conditions++
		}
	}
	if conditions == 0 {
		return nil, "match", "must hold at least one condition (namespaces, labels, annotations, privileged, host_network, host_pid, host_ipc or image_registries)"
	}
	for _, g := range []struct {
		key  string
		pats []string
	}{{"match.namespaces", m.Namespaces}, {"match.image_registries", m.ImageRegistries}} {
		for _, p := range g.pats {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				return nil, g.key, fmt.Sprintf("bad pattern %q", p)
			}
		}
	}
	return r, "", ""
}

// matches reports whether every condition of r holds for in. imgs are in's
// images, parsed.
func (r *rule) matches(in PodInput, imgs []imageName) bool {
	m := &r.match
	if m.Namespaces != nil && !slices.ContainsFunc(m.Namespaces, func(p string) bool { return globMatch(p, in.Namespace) }) {
		return false
	}
	if !subset(m.Labels, in.Labels) || !subset(m.Annotations, in.Annotations) {
		return false
	}
	for _, c := range []struct {
		want *bool
		got  bool
	}{{m.Privileged, in.Privileged}, {m.HostNetwork, in.HostNetwork}, {m.HostPID, in.HostPID}, {m.HostIPC, in.HostIPC}} {
		if c.want != nil && *c.want != c.got {
			return false
		}
	}
	if m.ImageRegistries != nil && !slices.ContainsFunc(imgs, func(img imageName) bool {
		return slices.ContainsFunc(m.ImageRegistries, func(p string) bool {
			return globMatch(p, img.domain) || globMatch(p, img.repo)
		})
	}) {
		return false
	}
	return true
}

// globMatch is path.Match; patterns were validated at load.
func globMatch(pattern, s string) bool {
	ok, _ := path.Match(pattern, s)
	return ok
}

func subset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// ruleID names rule i of a file in errors: its quoted name, else #N.
func ruleID(specs []ruleSpec, i int) string {
	if i < len(specs) && specs[i].Name != "" {
		return strconv.Quote(specs[i].Name)
	}
	return "#" + strconv.Itoa(i+1)
}

// handlerList describes the configured handlers for error messages, e.g.
// "configured: runc, vm; aliases: kata→vm".
func handlerList(cfg *configs.Config) string {
	var aliases []string
	for n, h := range cfg.Runtime.Runtimes {
		for _, a := range h.Aliases {
			aliases = append(aliases, a+"→"+n)
		}
	}
	s := "configured: " + strings.Join(slices.Sorted(maps.Keys(cfg.Runtime.Runtimes)), ", ")
	if len(aliases) > 0 {
		slices.Sort(aliases)
		s += "; aliases: " + strings.Join(aliases, ", ")
	}
	return s
}

// locator finds lines in a policy file. BurntSushi/toml reports no positions
// for decoded values, so rule and key lines are found by scanning: rule i
// starts at the i-th [[rule]] header and a key is the first line in that
// rule's span that assigns it.
type locator struct {
	lines  []string
	starts []int // 1-based line of each [[rule]] header
}

var ruleHeaderRE = regexp.MustCompile(`^\s*\[\[\s*rule\s*\]\]`)

func newLocator(data []byte) *locator {
	l := &locator{lines: strings.Split(string(data), "\n")}
	for i, s := range l.lines {
		if ruleHeaderRE.MatchString(s) {
			l.starts = append(l.starts, i+1)
		}
	}
	return l
}

// line is where rule i assigns key (its last dotted part), else the rule's
// header line; 0 when the rule has no header (e.g. an inline array).
func (l *locator) line(i int, key string) int {
	if i >= len(l.starts) {
		return 0
	}
	start, end := l.starts[i], len(l.lines)
	if i+1 < len(l.starts) {
		end = l.starts[i+1] - 1
	}
	if key != "" {
		leaf := key[strings.LastIndex(key, ".")+1:]
		re := regexp.MustCompile(`^\s*["']?` + regexp.QuoteMeta(leaf) + `["']?\s*=`)
		for n := start; n <= end; n++ {
			if re.MatchString(l.lines[n-1]) {
				return n
			}
		}
	}
	return start
}

// ruleAt is the index of the rule whose span holds line, -1 before the first.
func (l *locator) ruleAt(line int) int {
	i := -1
	for i+1 < len(l.starts) && l.starts[i+1] <= line {
		i++
	}
	return i
}

// keyError is a PolicyError for a full dotted TOML key such as
// rule.match.namspaces, located at its first assignment.
func (l *locator) keyError(file, key, msg string, specs []ruleSpec) *PolicyError {
	e := &PolicyError{File: file, Key: key, Msg: msg}
	rel, ok := strings.CutPrefix(key, "rule.")
	if !ok || len(l.starts) == 0 {
		return e
	}
	leaf := rel[strings.LastIndex(rel, ".")+1:]
	re := regexp.MustCompile(`^\s*["']?` + regexp.QuoteMeta(leaf) + `["']?\s*=`)
	for n, s := range l.lines {
		if i := l.ruleAt(n + 1); i >= 0 && re.MatchString(s) {
			e.Line, e.Rule, e.Key = n+1, ruleID(specs, i), rel
			return e
		}
	}
	return e
}

// decodeErrRE matches the type errors BurntSushi/toml returns as plain errors.
var decodeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

func (l *locator) decodeError(file string, err error) *PolicyError {
	var pe toml.ParseError
	e := &PolicyError{File: file, Msg: err.Error()}
	switch m := decodeErrRE.FindStringSubmatch(err.Error()); {
	case errors.As(err, &pe):
		// A syntax error: LastKey is only where the parser had got to.
		e.Line, e.Msg = pe.Position.Line, pe.Message
		if pe.LastKey != "" {
			e.Msg += fmt.Sprintf(" (after key %s)", pe.LastKey)
		}
	case m != nil:
		e.Line, _ = strconv.Atoi(m[1])
		e.Key, e.Msg = m[2], m[3]
	}
	if rel, ok := strings.CutPrefix(e.Key, "rule."); ok && e.Line > 0 {
		if i := l.ruleAt(e.Line); i >= 0 {
			e.Rule, e.Key = ruleID(nil, i), rel
		}
	}
	return e
}
