// Package api is the generated ttrpc API between crivm and crivm-agent.
//
// Regenerate with `go generate ./agentproxy/api` after editing agent.proto.
// Tool versions the committed files were generated with:
//   - protoc 3.21.12 (Debian 12 package protobuf-compiler)
//   - protoc-gen-go from google.golang.org/protobuf v1.36.12
//   - protoc-gen-go-ttrpc from github.com/containerd/ttrpc v1.2.10
//
// The plugins are built from the versions in go.mod, so they move with it.
package api

//go:generate sh -c "go build -o .bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go && go build -o .bin/protoc-gen-go-ttrpc github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc && PATH=$PWD/.bin:$PATH protoc -I. --go_out=. --go_opt=paths=source_relative --go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative agent.proto; rc=$?; rm -rf .bin; exit $rc"
