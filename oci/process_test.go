package oci

import (
	"errors"
	"slices"
	"testing"

	imgspec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestProcessArgs(t *testing.T) {
	img := &imgspec.ImageConfig{Entrypoint: []string{"/entry", "-e"}, Cmd: []string{"cmd", "-c"}}
	tests := []struct {
		name          string
		command, args []string
		img           *imgspec.ImageConfig
		want          []string
		wantErr       bool
	}{
		{name: "neither: entrypoint+cmd", img: img, want: []string{"/entry", "-e", "cmd", "-c"}},
		{name: "command only: drops entrypoint and cmd", command: []string{"/bin/sh"}, img: img, want: []string{"/bin/sh"}},
		{name: "args only: entrypoint+args", args: []string{"a", "b"}, img: img, want: []string{"/entry", "-e", "a", "b"}},
		{name: "command and args", command: []string{"/bin/sh", "-c"}, args: []string{"echo hi"}, img: img, want: []string{"/bin/sh", "-c", "echo hi"}},
		{name: "args only, image without entrypoint", args: []string{"/bin/true"}, img: &imgspec.ImageConfig{Cmd: []string{"x"}}, want: []string{"/bin/true"}},
		{name: "no image, no command", wantErr: true},
		{name: "empty image", img: &imgspec.ImageConfig{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := processArgs(tt.command, tt.args, tt.img)
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestProcessArgsSandbox(t *testing.T) {
	if got := processArgsSandbox(nil); !slices.Equal(got, []string{"/pause"}) {
		t.Errorf("nil image: %q", got)
	}
	if got := processArgsSandbox(&imgspec.ImageConfig{Entrypoint: []string{"/pause"}, Cmd: []string{"-v"}}); !slices.Equal(got, []string{"/pause", "-v"}) {
		t.Errorf("pause image: %q", got)
	}
}

func TestMergeEnv(t *testing.T) {
	tests := []struct {
		name  string
		lists [][]string
		want  []string
	}{
		{"image then cri, later wins in place", [][]string{{"PATH=/img", "A=1", "B=2"}, {"B=3", "C=4"}}, []string{"PATH=/img", "A=1", "B=3", "C=4"}},
		{"default PATH", [][]string{{"A=1"}}, []string{"A=1", defaultPathEnv}},
		{"cri overrides PATH", [][]string{{"PATH=/img"}, {"PATH=/cri"}}, []string{"PATH=/cri"}},
		{"value with =", [][]string{{"A=x=y"}, {"B="}}, []string{"A=x=y", "B=", defaultPathEnv}},
		{"key without value and empty key", [][]string{{"NOVAL", "=bad"}}, []string{"NOVAL", defaultPathEnv}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeEnv(tt.lists...); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWorkingDir(t *testing.T) {
	tests := []struct {
		cri, img, want string
		wantErr        bool
	}{
		{"", "", "/", false},
		{"", "/app", "/app", false},
		{"/work/", "/app", "/work", false},
		{"rel", "", "", true},
	}
	for _, tt := range tests {
		got, err := workingDir(tt.cri, &imgspec.ImageConfig{WorkingDir: tt.img})
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("workingDir(%q, %q) = %q, %v; want %q", tt.cri, tt.img, got, err, tt.want)
		}
	}
}
