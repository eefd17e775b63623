package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	internalapi "k8s.io/cri-api/pkg/apis"
	criclient "k8s.io/cri-client/pkg"
)

func (c *cli) runtime(ctx context.Context) (internalapi.RuntimeService, error) {
	rs, err := criclient.NewRemoteRuntimeServiceBuilder().
		WithEndpoint(c.endpoint).
		WithConnectionTimeout(c.timeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", c.endpoint, err)
	}
	return rs, nil
}

// readProtoJSON reads a CRI config file in crictl's JSON format (protojson;
// snake_case and lowerCamelCase field names both work).
func readProtoJSON(path string, m proto.Message) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := protojson.Unmarshal(data, m); err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

// printJSON writes messages the way crictl does: protojson, indented.
func (c *cli) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding json: %w", err)
	}
	_, err = fmt.Fprintln(c.stdout, string(b))
	return err
}

func (c *cli) printAnyJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding json: %w", err)
	}
	_, err = fmt.Fprintln(c.stdout, string(b))
	return err
}

func (c *cli) table(header ...string) *tabwriter.Writer {
	w := tabwriter.NewWriter(c.stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(header, "\t"))
	return w
}

// ago renders a creation time as crictl does: "5 minutes ago".
func ago(unixNano int64) string {
	d := time.Since(time.Unix(0, unixNano))
	switch {
	case d < time.Minute:
		return "Less than a minute ago"
	case d < time.Hour:
		return plural(int(d.Minutes()), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d.Hours()), "hour") + " ago"
	}
	return plural(int(d.Hours()/24), "day") + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "About a " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

func truncID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// labelFlags collects repeated --label k=v flags.
type labelFlags map[string]string

func (l labelFlags) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: want key=value", s)
	}
	l[k] = v
	return nil
}
