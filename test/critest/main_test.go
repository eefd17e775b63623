package main

import (
	"regexp"
	"testing"
)

func TestSplitRef(t *testing.T) {
	for _, c := range []struct{ ref, repo, tag string }{
		{"registry.k8s.io/pause:3.9", "pause", "3.9"},
		{"k8s.gcr.io/pause:3.9", "pause", "3.9"},
		{"gcr.io/k8s-staging-cri-tools/test-image-tags:1", "k8s-staging-cri-tools/test-image-tags", "1"},
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "e2e-test-images/busybox", "1.29-2"},
		{"gcr.io/k8s-staging-cri-tools/test-image-latest", "k8s-staging-cri-tools/test-image-latest", "latest"},
		{"127.0.0.1:5000/a/b", "a/b", "latest"},
	} {
		repo, tag, err := splitRef(c.ref)
		if err != nil || repo != c.repo || tag != c.tag {
			t.Errorf("splitRef(%q) = %q, %q, %v; want %q, %q", c.ref, repo, tag, err, c.repo, c.tag)
		}
	}
	if _, _, err := splitRef("busybox:latest"); err == nil {
		t.Errorf("splitRef accepted a reference without a registry host")
	}
}

// TestSkipList: every entry has a reason and a known run, none repeats,
// and each pattern matches its own text literally (as --ginkgo.skip).
func TestSkipList(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range skips {
		if s.Spec == "" || s.Reason == "" {
			t.Errorf("entry %+v: spec and reason are required", s)
		}
		if seen[s.Spec] {
			t.Errorf("entry %q repeats", s.Spec)
		}
		seen[s.Spec] = true
		for _, r := range s.Runs {
			if r != runRunc && r != runVM {
				t.Errorf("entry %q: unknown run %q", s.Spec, r)
			}
		}
		re, err := regexp.Compile(s.pattern())
		if err != nil || !re.MatchString("[k8s.io] X "+s.Spec+" [Conformance]") {
			t.Errorf("entry %q: pattern %q does not match it (%v)", s.Spec, s.pattern(), err)
		}
	}
	// The runc run skips only what every run skips.
	for _, s := range skipsFor(runRunc) {
		if s.Runs != nil {
			t.Errorf("runc run skips %q, a vm-only entry", s.Spec)
		}
	}
	if len(skipsFor(runVM)) <= len(skipsFor(runRunc)) {
		t.Errorf("the vm run skips no more than the runc run")
	}
}
