package trust

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/crivm/crivm/configs"
)

func TestLoadPolicyErrors(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	const ok = "[[rule]]\nname = \"ok\"\ntrust = \"trusted\"\n[rule.match]\nnamespaces = [\"a\"]\n"
	tests := []struct {
		name  string
		files map[string]string
		want  string // the whole error after "trust policy DIR/"
	}{
		{"unknown match key", map[string]string{"p.toml": ok + `
[[rule]]
name = "x"
trust = "untrusted"
[rule.match]
namspaces = ["a"]
`}, `p.toml:11: rule "x": key match.namspaces: unknown key`},
		{"unknown rule key", map[string]string{"p.toml": `
[[rule]]
name = "x"
trust = "untrusted"
hanlder = "vm"
[rule.match]
namespaces = ["a"]
`}, `p.toml:5: rule "x": key hanlder: unknown key`},
		{"unknown top-level table", map[string]string{"p.toml": "[[rules]]\nname = \"x\"\n"},
			`p.toml: key rules: unknown key (also unknown: rules.name)`},
		{"missing name", map[string]string{"p.toml": ok + "\n[[rule]]\ntrust = \"trusted\"\n[rule.match]\nnamespaces = [\"a\"]\n"},
			`p.toml:7: rule #2: key name: must be set`},
		{"missing trust", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\n[rule.match]\nnamespaces = [\"a\"]\n"},
			`p.toml:1: rule "x": key trust: must be set to "trusted" or "untrusted"`},
		{"bad trust", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"maybe\"\n[rule.match]\nnamespaces = [\"a\"]\n"},
			`p.toml:3: rule "x": key trust: "maybe" is not one of trusted, untrusted`},
		{"trust of the wrong type", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = true\n"},
			`p.toml:3: rule #1: key trust: incompatible types: TOML value has type bool; destination has type string`},
		{"syntax error", map[string]string{"p.toml": ok + "\n[[rule]\n"},
			`p.toml:8: expected end of table array name delimiter ']', but got '\n' instead (after key rule.match)`},
		{"duplicate name across files", map[string]string{"10-a.toml": ok, "20-b.toml": "\n" + ok},
			`20-b.toml:2: rule "ok": key name: duplicate rule name (first defined in DIR/10-a.toml:1)`},
		{"bad namespace glob", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n[rule.match]\nnamespaces = [\"a\", \"[b\"]\n"},
			`p.toml:5: rule "x": key match.namespaces: bad pattern "[b"`},
		{"empty glob", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n[rule.match]\nnamespaces = [\"\"]\n"},
			`p.toml:5: rule "x": key match.namespaces: bad pattern ""`},
		{"bad image glob", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n[rule.match]\nimage_registries = [\"quay.io/[\"]\n"},
			`p.toml:5: rule "x": key match.image_registries: bad pattern "quay.io/["`},
		{"no match table", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n"},
			`p.toml:1: rule "x": key match: must hold at least one condition`},
		{"empty match table", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n[rule.match]\n"},
			`p.toml:1: rule "x": key match: must hold at least one condition`},
		{"empty list", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n[rule.match]\nnamespaces = []\nprivileged = true\n"},
			`p.toml:5: rule "x": key match.namespaces: is empty; leave it out instead`},
		{"empty labels", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\n[rule.match]\nlabels = {}\n"},
			`p.toml:5: rule "x": key match.labels: is empty; leave it out instead`},
		{"unknown handler", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"trusted\"\nhandler = \"gvisor\"\n[rule.match]\nnamespaces = [\"a\"]\n"},
			`p.toml:4: rule "x": key handler: handler "gvisor" is not configured (configured: crun, runc, vm, vm-big; aliases: kata→vm)`},
		{"untrusted rule on oci handler", map[string]string{"p.toml": "[[rule]]\nname = \"x\"\ntrust = \"untrusted\"\nhandler = \"runc\"\n[rule.match]\nnamespaces = [\"a\"]\n"},
			`p.toml:4: rule "x": key handler: handler "runc" has runtime_type "oci"; untrusted pods run only on "vm" handlers`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			_, err := LoadPolicy(dir, cfg)
			if err == nil {
				t.Fatal("got no error")
			}
			want := "trust policy " + dir + "/" + strings.ReplaceAll(tt.want, "DIR", dir)
			if got := err.Error(); !strings.HasPrefix(got, want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestLoadPolicyPaths(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	p, err := LoadPolicy("", cfg)
	if err != nil || p.Len() != 0 {
		t.Fatalf("empty path: got %d rules, %v", p.Len(), err)
	}
	if _, err := LoadPolicy(filepath.Join(t.TempDir(), "missing"), cfg); err == nil || !strings.Contains(err.Error(), "missing: reading:") {
		t.Fatalf("missing path: got %v", err)
	}
	p, err = LoadPolicy(t.TempDir(), cfg)
	if err != nil || p.Len() != 0 {
		t.Fatalf("empty dir: got %d rules, %v", p.Len(), err)
	}
	p, err = LoadPolicy("testdata/policy.d/20-tenants.toml", cfg)
	if err != nil || p.Len() != 3 {
		t.Fatalf("single file: got %d rules, %v", p.Len(), err)
	}
}

func TestExamplePolicies(t *testing.T) {
	cfg := configs.Defaults()
	for path, want := range map[string]int{"../configs/trust-policy.toml": 4, "testdata/policy.d": 5} {
		n, err := CheckPolicy(path, cfg)
		if err != nil || n != want {
			t.Errorf("%s: got %d rules, %v; want %d", path, n, err, want)
		}
	}
	p, err := LoadPolicy("../configs/trust-policy.toml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(cfg, p).Classify(PodInput{Namespace: "tenant-acme"})
	if err != nil || v.Trusted || v.Handler != "vm" || v.Rule != "tenants" {
		t.Errorf("example policy on a tenant pod: got %+v, %v", v, err)
	}
}

func TestReloadKeepsOldPolicy(t *testing.T) {
	cfg := testConfig(configs.Trusted, "vm")
	dir := writeFiles(t, map[string]string{
		"good.toml":   "[[rule]]\nname = \"a\"\ntrust = \"untrusted\"\n[rule.match]\nnamespaces = [\"a\"]\n",
		"good2.toml":  "[[rule]]\nname = \"b\"\ntrust = \"untrusted\"\n[rule.match]\nnamespaces = [\"b\"]\n",
		"broken.toml": "[[rule]]\nname = \"a\"\ntrust = \"untrusted\"\n[rule.match]\nnamespacez = [\"a\"]\n",
	})
	p, err := LoadPolicy(filepath.Join(dir, "good.toml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := New(cfg, p)
	ruleFor := func(ns string) string {
		t.Helper()
		v, err := c.Classify(PodInput{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		return v.Rule
	}
	err = c.Reload(filepath.Join(dir, "broken.toml"))
	if err == nil || !strings.Contains(err.Error(), "broken.toml:5: rule \"a\": key match.namespacez: unknown key") {
		t.Fatalf("reload of a broken file: got %v", err)
	}
	if got := ruleFor("a"); got != "a" {
		t.Errorf("after a failed reload: got rule %q, want the old rule a", got)
	}
	if err := c.Reload(filepath.Join(dir, "good2.toml")); err != nil {
		t.Fatal(err)
	}
	if got, got2 := ruleFor("a"), ruleFor("b"); got != "" || got2 != "b" {
		t.Errorf("after reload: got rules %q, %q; want none and b", got, got2)
	}
}
