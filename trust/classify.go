// Package trust decides, for every pod, whether it is trusted and which
// handler runs it. Its one invariant: an untrusted pod never runs on a
// handler whose runtime_type is not "vm".
package trust

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// Trust annotations honoured from the pod. They can only lower trust: a
// tenant can set annotations.
const (
	AnnotationTrustedSandbox    = "io.kubernetes.cri-o.TrustedSandbox"
	AnnotationUntrustedWorkload = "io.kubernetes.cri.untrusted-workload"
)

// Classifier turns a PodInput into a Verdict. It is safe for concurrent use;
// the policy can be swapped with Reload, the config is fixed for its life.
type Classifier struct {
	cfg      *configs.Config
	policy   atomic.Pointer[Policy]
	audit    *AuditLog
	verdicts *prometheus.CounterVec
	images   *prometheus.CounterVec
	mounts   *prometheus.CounterVec
}

// Option configures a Classifier.
type Option func(*Classifier)

// WithAuditLog makes Decide and DecideImage record every decision in a.
func WithAuditLog(a *AuditLog) Option { return func(c *Classifier) { c.audit = a } }

// New returns a Classifier over cfg (validated) and policy (nil: no rules).
func New(cfg *configs.Config, policy *Policy, opts ...Option) *Classifier {
	c := &Classifier{
		cfg: cfg,
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crivm_trust_verdicts_total",
			Help: "Pod sandbox trust decisions by handler, trust and outcome (admitted or refused).",
		}, []string{"handler", "trusted", "outcome"}),
		images: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crivm_trust_image_checks_total",
			Help: "Container image trust checks by sandbox handler, trust and outcome (admitted or refused).",
		}, []string{"handler", "trusted", "outcome"}),
		mounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crivm_trust_mount_checks_total",
			Help: "Mount policy decisions on untrusted pods' hostPath mounts and host devices, by kind (mount or device) and outcome (admitted or refused).",
		}, []string{"kind", "outcome"}),
	}
	if policy == nil {
		policy = &Policy{}
	}
	c.policy.Store(policy)
	for _, o := range opts {
		o(c)
	}
	return c
}

// Reload replaces the policy with the one at path. On error the old policy
// stays in force.
func (c *Classifier) Reload(path string) error {
	p, err := LoadPolicy(path, c.cfg)
	if err != nil {
		return fmt.Errorf("reloading: %w", err)
	}
	c.policy.Store(p)
	return nil
}

// Collectors are the classifier's metrics, for registration by the caller.
func (c *Classifier) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.verdicts, c.images, c.mounts}
}

// Decide classifies in, counts the decision and records it in the audit log.
// The server calls it at RunPodSandbox.
func (c *Classifier) Decide(ctx context.Context, in PodInput) (Verdict, error) {
	v, err := c.classify(in)
	c.verdicts.WithLabelValues(v.Handler, strconv.FormatBool(v.Trusted), outcome(err)).Inc()
	c.record(ctx, in, v, err)
	if err != nil {
		return Verdict{}, err
	}
	return v, nil
}

// DecideImage is CheckImage plus counting and auditing. The server calls it
// at CreateContainer with the sandbox's verdict.
func (c *Classifier) DecideImage(ctx context.Context, sandbox Verdict, in PodInput, image string) error {
	in.Images = append(slices.Clone(in.Images), image)
	j, err := c.checkImage(sandbox, in, image)
	c.images.WithLabelValues(sandbox.Handler, strconv.FormatBool(j.trusted), outcome(err)).Inc()
	c.record(ctx, in, Verdict{Handler: sandbox.Handler, HandlerType: sandbox.HandlerType, Trusted: j.trusted, Reasons: j.reasons, Rule: j.ruleName()}, err)
	return err
}

func (c *Classifier) record(ctx context.Context, in PodInput, v Verdict, err error) {
	if rerr := c.audit.Record(ctx, in, v, err); rerr != nil {
		log.G(ctx).Warn("writing trust audit log", "error", rerr)
	}
}

func outcome(err error) string {
	if err != nil {
		return "refused"
	}
	return "admitted"
}

// Classify decides in's trust and handler. A refusal is an InvalidArgument
// (bad request: unknown handler, malformed annotation or image) or a
// FailedPrecondition (the pod may not run as asked) error, with a zero
// Verdict.
func (c *Classifier) Classify(in PodInput) (Verdict, error) {
	v, err := c.classify(in)
	if err != nil {
		return Verdict{}, err
	}
	return v, nil
}

// classify is Classify, but on error it also returns what was decided so
// far, for the audit log. That verdict must not be acted on.
func (c *Classifier) classify(in PodInput) (Verdict, error) {
	var v Verdict
	var rc *configs.RuntimeHandler
	if in.RuntimeHandler != "" {
		name, h, ok := c.cfg.ResolveHandler(in.RuntimeHandler)
		if !ok {
			return v, errdefs.InvalidArgument("unknown runtime handler %q (%s)", in.RuntimeHandler, handlerList(c.cfg))
		}
		v.Handler, v.HandlerType, rc = name, h.RuntimeType, h
	}
	j, err := c.judge(in)
	if err != nil {
		return v, err
	}
	v.Trusted, v.Reasons, v.Rule = j.trusted, j.reasons, j.ruleName()
	why := strings.Join(j.reasons, "; ")
	if asks := in.hostRequests(c.cfg.Runtime.UntrustedPrivilegedInVM); !v.Trusted && len(asks) > 0 {
		return v, errdefs.FailedPrecondition("untrusted pod may not request %s (untrusted because: %s)", strings.Join(asks, ", "), why)
	}

	switch rt := c.cfg.Runtime; {
	case rc != nil:
		src := fmt.Sprintf("handler %q requested by RuntimeClass", v.Handler)
		if in.RuntimeHandler != v.Handler {
			src = fmt.Sprintf("handler %q requested by RuntimeClass as alias %q", v.Handler, in.RuntimeHandler)
		}
		v.Reasons = append(v.Reasons, src)
		if !v.Trusted && rc.RuntimeType != configs.RuntimeTypeVM {
			return v, errdefs.FailedPrecondition("runtime handler %q has runtime_type %q but the pod is untrusted (%s); untrusted pods run only on %q handlers",
				in.RuntimeHandler, rc.RuntimeType, why, configs.RuntimeTypeVM)
		}
	case j.rule != nil && j.rule.handler != "":
		v.Handler = j.rule.handler
		v.Reasons = append(v.Reasons, fmt.Sprintf("handler %q from rule %q", v.Handler, j.rule.name))
	case v.Trusted:
		v.Handler = rt.DefaultRuntime
		v.Reasons = append(v.Reasons, fmt.Sprintf("handler %q from default_runtime", v.Handler))
	case rt.RuntimeUntrustedWorkload == "":
		return v, errdefs.FailedPrecondition("no vm handler configured (runtime_untrusted_workload is empty); the pod is untrusted: %s", why)
	default:
		v.Handler = rt.RuntimeUntrustedWorkload
		v.Reasons = append(v.Reasons, fmt.Sprintf("handler %q from runtime_untrusted_workload", v.Handler))
	}
	if v.HandlerType == "" {
		h, ok := c.cfg.Runtime.Runtimes[v.Handler]
		if !ok {
			return v, errdefs.FailedPrecondition("handler %q is not configured (%s)", v.Handler, handlerList(c.cfg))
		}
		v.HandlerType = h.RuntimeType
	}
	return v, checkInvariant(v)
}

// checkInvariant is the last check of every verdict: untrusted ⇒ vm.
func checkInvariant(v Verdict) error {
	if !v.Trusted && v.HandlerType != configs.RuntimeTypeVM {
		return errdefs.FailedPrecondition("trust invariant violated: untrusted pod routed to handler %q of runtime_type %q (reasons: %s)",
			v.Handler, v.HandlerType, strings.Join(v.Reasons, "; "))
	}
	return nil
}

// CheckImage judges the pod again with image added, for CreateContainer. It
// refuses when that makes the pod untrusted while sandbox runs on a handler
// that is not a vm handler.
func (c *Classifier) CheckImage(sandbox Verdict, in PodInput, image string) error {
	in.Images = append(slices.Clone(in.Images), image)
	_, err := c.checkImage(sandbox, in, image)
	return err
}

func (c *Classifier) checkImage(sandbox Verdict, in PodInput, image string) (judgement, error) {
	j, err := c.judge(in)
	if err != nil || j.trusted || sandbox.HandlerType == configs.RuntimeTypeVM {
		return j, err
	}
	if j.rule != nil {
		return j, errdefs.FailedPrecondition("image %q matches rule %q (untrusted) but pod runs on %s handler %q", image, j.rule.name, sandbox.HandlerType, sandbox.Handler)
	}
	return j, errdefs.FailedPrecondition("image %q: pod is untrusted (%s) but runs on %s handler %q", image, strings.Join(j.reasons, "; "), sandbox.HandlerType, sandbox.Handler)
}

// judgement is the trust part of a verdict.
type judgement struct {
	trusted bool
	reasons []string
	rule    *rule // the rule that decided, nil if none did
}

func (j judgement) ruleName() string {
	if j.rule == nil {
		return ""
	}
	return j.rule.name
}

// judge decides trust: a lowering annotation, else the first matching rule,
// else default_workload_trust.
func (c *Classifier) judge(in PodInput) (judgement, error) {
	lowered, ignored, err := annotationTrust(in.Annotations)
	if err != nil {
		return judgement{}, err
	}
	if len(lowered) > 0 {
		return judgement{reasons: append(lowered, ignored...)}, nil
	}
	r, err := c.policy.Load().match(in)
	if err != nil {
		return judgement{}, err
	}
	var j judgement
	if r != nil {
		j = judgement{trusted: r.trusted, reasons: []string{r.reason()}, rule: r}
	} else {
		d := c.cfg.Runtime.DefaultWorkloadTrust
		j = judgement{trusted: d == configs.Trusted, reasons: []string{"default_workload_trust = " + d}}
	}
	if !j.trusted {
		j.reasons = append(j.reasons, ignored...)
	}
	return j, nil
}

// match returns the first rule that matches in, nil if none does.
func (p *Policy) match(in PodInput) (*rule, error) {
	var imgs []imageName
	if p.hasImages {
		for _, ref := range in.Images {
			img, err := parseImage(ref)
			if err != nil {
				return nil, err
			}
			imgs = append(imgs, img)
		}
	}
	for _, r := range p.rules {
		if r.matches(in, imgs) {
			return r, nil
		}
	}
	return nil, nil
}

// annotationTrust reads the trust annotations. lowered holds a reason per
// annotation that makes the pod untrusted; ignored holds one per annotation
// that asks for trust, which annotations cannot grant.
func annotationTrust(ann map[string]string) (lowered, ignored []string, err error) {
	for _, a := range []struct {
		key       string
		untrusted bool // the value that lowers trust
	}{{AnnotationTrustedSandbox, false}, {AnnotationUntrustedWorkload, true}} {
		raw, ok := ann[a.key]
		if !ok {
			continue
		}
		var val bool
		switch {
		case strings.EqualFold(raw, "true"):
			val = true
		case strings.EqualFold(raw, "false"):
		default:
			return nil, nil, errdefs.InvalidArgument("annotation %s: value %q is not \"true\" or \"false\"", a.key, raw)
		}
		if val == a.untrusted {
			lowered = append(lowered, fmt.Sprintf("annotation %s=%s", a.key, raw))
		} else {
			ignored = append(ignored, fmt.Sprintf("annotation %s=%s ignored: annotations cannot raise trust", a.key, raw))
		}
	}
	return lowered, ignored, nil
}
