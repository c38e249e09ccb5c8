"""A sweep's points beyond the plain forward: a norm variant or a backward pass, as run_sweep times them.

``run_sweep`` measures plain RMSNorm's forward through the registry (rmsnorm_lab.impls). For
``variant`` gemma / qk-norm / fp8-static / fp8-per-token (rmsnorm_lab.variants) and for
``pass`` bwd / fwd+bwd (rmsnorm_lab.backward) the implementations are those modules' subjects;
this module gives them the shape the sweep needs: a name list (``subject_names``), a support
answer with its reason (``support``), and ``prepare``, which checks one subject on one case
(the variant's checker, or the gradients against float64) and returns the call to time as
``fn(x, w, r, eps)`` for ``rmsnorm_lab.timing.Runner`` with the bytes of the variant's / the
backward's bytes model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .backward import DTYPES as VARIANT_DTYPES     # what the variants' and the backward's checkers know
from .timing import _sync
from .variants import VARIANTS
from .variants import check_variant as _check_variant

PLAIN = "plain"
VARIANT_CHOICES = (PLAIN, *VARIANTS)
PASS_CHOICES = ("fwd", "bwd", "fwd+bwd")
DEFAULT_HEAD_DIM = 128


def is_plain(variant: str, pass_: str) -> bool:
    """Measured through the registry (the plain forward's sweep), not through this module."""
    return variant == PLAIN and pass_ == "fwd"


def check_variant(value, name: str = "variant") -> str:
    """plain or one of rmsnorm_lab.variants' variants."""
    return _check_variant(value, name, VARIANT_CHOICES)


def check_passes(values, name: str = "passes") -> list[str]:
    """A pass name or a list of them ('fwd', 'bwd', 'fwd+bwd'), without repeats."""
    from .validate import suggest
    if isinstance(values, str):
        values = [values]
    if isinstance(values, tuple):
        values = list(values)
    if not isinstance(values, list) or not values:
        raise TypeError(f"{name}: expected one or more of {', '.join(PASS_CHOICES)}, got {values!r}")
    for v in values:
        if v not in PASS_CHOICES:
            raise ValueError(f"{name}: unknown pass {v!r}; expected one of {', '.join(PASS_CHOICES)}"
                             f"{suggest(str(v), PASS_CHOICES)}")
    return list(dict.fromkeys(values))


def check_head_dim(value, hidden, variant: str, name: str = "head_dim") -> int:
    """A positive head size that divides every hidden size (qk-norm: hidden is the width of q)."""
    from .validate import check_positive_int
    value = check_positive_int(name, value)
    if variant == "qk-norm":
        bad = [h for h in hidden if h % value]
        if bad:
            raise ValueError(f"{name}: {value} does not divide hidden size {bad[0]} (for qk-norm the hidden "
                             f"size is the width of q, heads x head_dim)")
    return value


def check_combination(variant: str, passes: list, dtypes: list, residual: list) -> list:
    """ValueError naming the parameter for what no subject can measure; returns the residual list
    (qk-norm has no fused residual form: its default both-ways list becomes [False])."""
    if variant != PLAIN and any(p != "fwd" for p in passes):
        raise ValueError(f"passes: the backward pass is measured for the plain variant only "
                         f"(variant {variant!r} is forward only)")
    if not all(is_plain(variant, p) for p in passes):
        bad = [d for d in dtypes if d not in VARIANT_DTYPES]
        if bad:
            what = f"variant {variant}" if variant != PLAIN else "the backward pass"
            raise ValueError(f"dtypes: {bad[0]} is not measured for {what} (supported: {', '.join(VARIANT_DTYPES)})")
    if variant == "qk-norm":
        if residual == [True]:
            raise ValueError("residual: the qk-norm variant has no fused residual form")
        return [False]
    return residual


# ---------------------------------------------------------------------------------------------- names

def subject_names(variant: str, pass_: str) -> list[str]:
    """Every implementation of this variant and pass (plain fwd: the registry's)."""
    if is_plain(variant, pass_):
        from .impls import registry
        return list(registry())
    if pass_ != "fwd":
        from .backward import SUBJECTS
        return list(SUBJECTS)
    from . import variants as V
    return [n for n in V.SUBJECT_NAMES if variant in V.subject_variants(n)]


def resolve_impls(impls, variant: str, passes: list, name: str = "impls") -> list[str]:
    """'all' (every implementation of each pass) or names known to at least one of the passes."""
    from .validate import suggest
    known = list(dict.fromkeys(n for p in passes for n in subject_names(variant, p)))
    if impls == "all" or impls == ["all"] or impls is None:
        return known
    if isinstance(impls, str):
        impls = [n for n in impls.replace(",", " ").split() if n]
    if not isinstance(impls, (list, tuple)) or not impls:
        raise TypeError(f"{name}: expected 'all' or a list of names, got {impls!r}")
    for n in impls:
        if n not in known:
            what = f"variant {variant}" if variant != PLAIN else "pass " + "/".join(passes)
            raise KeyError(f"{name}: unknown implementation {n!r} for {what}; known: {', '.join(known)}"
                           f"{suggest(str(n), known)}")
    return list(dict.fromkeys(impls))


def role(name: str, variant: str, pass_: str) -> str:
    if pass_ != "fwd":
        from .backward import SUBJECTS
        return SUBJECTS[name].role
    from .variants import subject_role
    return subject_role(name)


def label(name: str, variant: str, pass_: str) -> str:
    if pass_ != "fwd":
        from .backward import SUBJECTS
        return SUBJECTS[name].label
    return name


def baseline(variant: str, pass_: str) -> set:
    """The subjects speedups are measured against (role "baseline")."""
    return {n for n in subject_names(variant, pass_) if role(n, variant, pass_) == "baseline"}


def variant_case(case, variant: str, head_dim: int):
    from .variants import VariantCase
    return VariantCase(variant, case.tokens, case.hidden, case.dtype, case.residual,
                       head_dim=head_dim if variant == "qk-norm" else DEFAULT_HEAD_DIM)


def support(name: str, case, variant: str, pass_: str, device: str):
    """Can this subject run this case here (Support, with the reason when not), without loading it."""
    if pass_ != "fwd":
        from .backward import SUBJECTS
        return SUBJECTS[name].supports(device, case.dtype)
    from .variants import subject_support
    return subject_support(name, variant, case.residual, device)


def support_rows(variant: str, pass_: str, device: str, dtype: str = "bfloat16") -> list[dict]:
    """Which implementations run this variant / pass here, and why not: dicts of impl, residual, ok, reason
    (``list --variant V`` / ``list --pass bwd``)."""
    if pass_ != "fwd":
        from .backward import SUBJECTS
        return [{"impl": n, "residual": "", "ok": sp.ok, "reason": sp.reason}
                for n, sp in ((n, s.supports(device, dtype)) for n, s in SUBJECTS.items())]
    from .variants import support_table
    return [{"impl": r["subject"], "residual": r["residual"], "ok": r["ok"], "reason": r["reason"]}
            for r in support_table(variant, device)]


# ---------------------------------------------------------------------------------------------- one point

@dataclass
class Prepared:
    """A checked subject ready to time: ``fn(x, w, r, eps)`` (what timing.Runner takes), whether it writes
    its inputs in place, the bytes it must move, and the check's fields (status, reason, err_* ...)."""
    fn: Callable
    x: object
    w: object
    r: object
    inplace: bool
    nbytes: int
    check: dict = field(default_factory=dict)
    setup_s: float = 0.0


class CaseData:
    """One case's inputs (and float64 reference, computed once) shared by every subject of it."""

    def __init__(self, case, variant: str, pass_: str, device: str, seed: int, eps: float, head_dim: int):
        self.case, self.variant, self.pass_, self.device, self.seed, self.eps = case, variant, pass_, device, seed, eps
        self.head_dim = head_dim
        self._inputs = None
        self._ref = None
        self.vcase = variant_case(case, variant, head_dim) if pass_ == "fwd" else None

    def inputs(self):
        if self._inputs is None:
            if self.vcase is not None:
                from .variants import make_inputs
                self._inputs = make_inputs(self.vcase, self.device, self.seed)
            else:
                from .backward import make_grad_inputs
                c = self.case
                self._inputs = make_grad_inputs(c.tokens, c.hidden, c.dtype, c.residual, self.device, self.seed)
        return self._inputs

    def grad_reference(self):
        if self._ref is None:
            from .backward import reference_grads
            x, w, r, dy, d_res = self.inputs()
            self._ref = reference_grads(x, w, r, self.eps, dy, d_res)
        return self._ref


def _fmt(v):
    import math
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v


def prepare(name: str, data: CaseData, check: bool = True, sm_count: int = 0) -> Prepared:
    """Load one subject, call it once, check it (when ``check``), and return what to time.

    Raises what loading or the first call raises (the sweep turns it into an error row)."""
    import time
    eps, dev = data.eps, data.device
    if data.vcase is not None:
        from . import variants as V
        vc = data.vcase
        sub = V.subjects(vc.variant, vc.residual, dev, [name])[0]
        if not sub.support:
            raise NotImplementedError(sub.support.reason)
        inputs = data.inputs()
        t0 = time.perf_counter()
        ret = V.call(vc, sub.fn, V.clone_inputs(inputs), eps)
        _sync(dev)
        setup_s = time.perf_counter() - t0
        chk = {}
        if check:
            res = V.check(vc, inputs, ret, eps)
            chk = {"status": res.status, "reason": res.detail, "err_out": _fmt(res.err),
                   "fp8_frac_off": _fmt(res.frac_off), "scale_err": _fmt(res.scale_rel_err)}
        del ret
        fn, x, w, r = V.timing_args(vc, inputs, sub.fn)
        return Prepared(fn, x, w, r, sub.inplace, V.bytes_moved(vc), chk, setup_s)

    from .backward import SUBJECTS, check_grads, pass_bytes
    subject = SUBJECTS[name]
    sup = subject.supports(dev, data.case.dtype)
    if not sup:
        raise NotImplementedError(sup.reason)
    x, w, r, dy, d_res = data.inputs()
    t0 = time.perf_counter()
    ops = subject.load()
    state = ops.fwd(x, w, r, eps)
    _sync(dev)
    setup_s = time.perf_counter() - t0
    chk = {}
    if check:
        g = check_grads(ops, x, w, r, eps, dy, d_res, data.case.dtype, data.grad_reference(),
                        "bwd" if data.pass_ == "bwd" else "fwd_bwd")
        chk = {"status": g["status"], "reason": g["reason"], "err_out": _fmt(g["err_dx"]),
               "err_dw": _fmt(g["err_dw"]), "err_residual": _fmt(g["err_dr"]) if r is not None else ""}
    if data.pass_ == "bwd":
        def fn(_x, _w, _r, _eps):
            return ops.bwd(state, dy, d_res)
    else:
        def fn(xx, ww, rr, ee):
            return ops.fwd_bwd(xx, ww, rr, ee, dy, d_res)
    nbytes = pass_bytes(data.pass_, data.case.tokens, data.case.hidden, x.element_size(), data.case.residual,
                        w_itemsize=w.element_size(), partial_rows=sm_count)
    return Prepared(fn, x, w, r, False, nbytes, chk, setup_s)
