"""Correctness: every output of every implementation against the float64 reference."""
from __future__ import annotations

from .cases import Case, make_inputs
from .impls import get_impl, resolve_names
from .reference import TOLERANCE, compare


def _clone(t):
    return None if t is None else t.clone()


def check_impl(name: str, case: Case, device: str = "cpu", seed: int = 0, eps: float = 1e-6,
               inputs=None) -> dict:
    """Run one implementation on one case and compare both outputs with the reference.

    status: 'ok', 'wrong' (error above the dtype's tolerance, NaN, or an input it
    should not touch was changed), 'skip' (cannot run here: reason) or 'error'.
    """
    import torch

    impl = get_impl(name)
    row = {"impl": name, **case.as_dict(), "device": device, "status": "", "err_out": float("nan"),
           "err_residual": float("nan"), "tolerance": TOLERANCE[case.dtype], "reason": ""}
    s = impl.supports(case.dtype, device)
    if not s:
        row.update(status="skip", reason=s.reason)
        return row
    x, w, r = inputs if inputs is not None else make_inputs(case, device, seed)
    xc, rc = x.clone(), _clone(r)
    try:
        fn = impl.load()
        got = fn(xc, w, rc, eps)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a failing peer becomes a row
        row.update(status="error", reason=f"{type(e).__name__}: {e}"[:500])
        return row
    tol = TOLERANCE[case.dtype]
    problems = []
    if r is None:
        out = got[0] if isinstance(got, tuple) else got
        row["err_out"], _ = compare(x, w, None, eps, out.reshape(x.shape))
    else:
        if not isinstance(got, tuple) or len(got) < 2:
            row.update(status="wrong", reason="expected (out, new_residual) with a residual")
            return row
        out, new_r = got[0], got[1]
        row["err_out"], row["err_residual"] = compare(x, w, r, eps, out.reshape(x.shape), new_r.reshape(x.shape))
        if not row["err_residual"] <= tol:
            problems.append(f"new residual error {row['err_residual']:.3g} > {tol:g}")
    if out.dtype != x.dtype:
        problems.append(f"output dtype {out.dtype} != input dtype {x.dtype}")
    if not row["err_out"] <= tol:
        problems.append(f"output error {row['err_out']:.3g} > {tol:g}")
    if not impl.inplace_residual or r is None:
        if not torch.equal(xc, x) or (r is not None and not torch.equal(rc, r)):
            problems.append("changed an input it does not document changing")
    row.update(status="wrong" if problems else "ok", reason="; ".join(problems))
    return row


def check_all(cases, impls=None, device: str = "cpu", seed: int = 0, eps: float = 1e-6):
    """check_impl over cases x implementations, one DataFrame (fresh random inputs per case)."""
    import pandas as pd

    names = resolve_names(impls)
    rows = []
    for i, case in enumerate(cases):
        inputs = make_inputs(case, device, seed + i) if any(get_impl(n).supports(case.dtype, device)
                                                          for n in names) else None
        for n in names:
            rows.append(check_impl(n, case, device, seed + i, eps, inputs=inputs))
    return pd.DataFrame(rows)
