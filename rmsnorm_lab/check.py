"""Correctness: the one checker. Every output of every implementation against the float64 reference.

Statuses (``STATUSES``), used by the check, the sweep and the support matrix alike:

- ``ok``    it ran and both outputs match the float64 reference within the dtype's tolerance
- ``wrong`` it ran, but an output is off, has the wrong shape or dtype, or it changed an input it
            does not document changing (``reason`` says which)
- ``error`` it raised an exception (``reason``: type and text; for our kernel a clear refusal that
            names the argument)
- ``crash`` the process died, ran past its time, or a CUDA fault poisoned its context (rows from a
            child process, ``rmsnorm_lab.isolate``; a CUDA fault seen in-process is one too)
- ``skip``  it cannot run here (``reason``: not installed, needs CUDA, a dtype, an input it is known
            to fail on, ...)

Rules the checker applies:

- Mixed dtypes: the reference is float64 of the actual values of x, weight and residual. The output
  may be in x's dtype or in a dtype torch's promotion gives (x with the weight and/or the
  residual); the new residual in x's, the residual's, or their promoted dtype. The tolerance is
  x's dtype's.
- Non-finite values: where the reference is NaN / Inf, the output must be too (the same ones).
- An all-zero row with eps = 0: RMSNorm is 0/0 there, undefined. Such a row is correct when it is
  all NaN (what the formula gives) or all zeros (the limit, what a guarded kernel returns); anything
  else there is ``wrong``. The other rows are compared as usual.
- Large cases (more than 2**31 elements) are compared on sampled rows (first, middle, last) and their
  x and residual are not checked for changes (no copy of them is kept). The weight is checked always,
  in-place implementations included.
- Output and new residual in the same memory is reported when either is wrong.
"""
from __future__ import annotations

from .cases import Case, make_inputs, skip_reason
from .impls import get_impl, resolve_names
from .reference import TOLERANCE, compare
from .validate import reset_warnings

STATUSES = ("ok", "wrong", "error", "crash", "skip")
_FAULT_WORDS = ("cuda error", "illegal memory access", "misaligned address", "illegal address",
                "device-side assert", "unspecified launch failure", "cuda_error", "an illegal instruction")


def _undefined_rows(x, r, eps):
    """Indices of rows whose sum of squares is 0 with eps == 0 (0/0: no defined answer)."""
    import torch

    if eps != 0:
        return None
    n = x.shape[-1]
    s = x.reshape(-1, n).to(torch.float64)
    if r is not None:
        s = s + r.reshape(-1, n).to(torch.float64)
    rows = torch.nonzero(s.pow(2).sum(-1) == 0).flatten()
    return rows if rows.numel() else None


def check_outputs(x, weight, residual, eps: float, got, tol: float, rows=None) -> dict:
    """Compare an implementation's return value ``got`` with the float64 reference of the pristine
    inputs ``x``, ``weight``, ``residual``. ``rows``: indices of the rows of ``got`` that ``x`` and
    ``residual`` hold (sampled rows of a large case); None: all rows.

    Returns {"status": "ok" | "wrong", "reason", "err_out", "err_residual"}.
    """
    import torch

    res = {"status": "", "reason": "", "err_out": float("nan"), "err_residual": float("nan")}
    weight = weight.to(x.device)            # a weight on another device: the reference runs on x's
    outs = got if isinstance(got, tuple) else (got,)
    if residual is not None and len(outs) < 2:
        res.update(status="wrong", reason="expected (out, new_residual) with a residual")
        return res
    n = x.shape[-1]
    pw = torch.promote_types(x.dtype, weight.dtype)
    want_dtypes = [{x.dtype, pw}]
    if residual is not None:
        pr = torch.promote_types(x.dtype, residual.dtype)
        want_dtypes[0] |= {pr, torch.promote_types(pw, pr)}
        want_dtypes.append({x.dtype, residual.dtype, pr})
    undefined = _undefined_rows(x, residual, eps)
    problems, picked = [], []
    for label, o, want in zip(("output", "new residual"), outs[:2 if residual is not None else 1], want_dtypes):
        if not isinstance(o, torch.Tensor):
            problems.append(f"{label} is a {type(o).__name__}, not a tensor")
            picked.append(None)
            continue
        total = x.numel() if rows is None else None
        if (total is not None and o.numel() != total) or o.shape[-1] != n:
            problems.append(f"{label} shape {tuple(o.shape)} != input shape {tuple(x.shape)}")
            picked.append(None)
            continue
        if o.dtype not in want:
            problems.append(f"{label} dtype {o.dtype} != input dtype {x.dtype}")
        o2 = o.reshape(-1, n)
        picked.append(o2 if rows is None else o2[rows])
    if undefined is not None and picked[0] is not None:
        z = picked[0][undefined].to(torch.float64)
        if not (bool(torch.isnan(z).all()) or bool((z == 0).all())):
            problems.append("a row of zeros with eps=0 (0/0) gave values other than all NaN or all zeros")
        keep = torch.ones(picked[0].shape[0], dtype=torch.bool, device=picked[0].device)
        keep[undefined] = False
        x, residual = x.reshape(-1, n)[keep.to(x.device)], None if residual is None else \
            residual.reshape(-1, n)[keep.to(residual.device)]
        picked = [None if p is None else p[keep] for p in picked]
    if picked[0] is not None:
        new_res = picked[1] if len(picked) > 1 else None        # a second output only with a residual
        res["err_out"], res["err_residual"] = compare(x, weight, residual, eps, picked[0].reshape(x.shape),
                                                      None if new_res is None else new_res.reshape(x.shape))
    for label, key, p in zip(("output", "new residual"), ("err_out", "err_residual"), picked):
        if p is not None and not res[key] <= tol:
            problems.append(f"{label} error {res[key]:.3g} > {tol:g}")
    if problems and len(outs) >= 2 and all(isinstance(o, torch.Tensor) for o in outs[:2]) and \
            outs[0].data_ptr() == outs[1].data_ptr():
        problems.append("output and new residual are the same memory")
    res.update(status="wrong" if problems else "ok", reason="; ".join(problems))
    return res


def clone_layout(t):
    """A copy of ``t`` with the same sizes, strides and storage offset (so the same alignment); its whole
    storage is copied, so overlapping layouts (a stride-0 broadcast) copy too."""
    import torch

    if t is None:
        return None
    n = t.untyped_storage().nbytes() // t.element_size()
    buf = torch.empty(n, dtype=t.dtype, device=t.device)
    buf.copy_(t.as_strided((n,), (1,), 0))
    return buf.as_strided(t.size(), t.stride(), t.storage_offset())


def _unchanged(after, before) -> bool:
    """Same values (NaN where there was NaN) after the call as before it."""
    import torch
    if torch.equal(after, before):
        return True
    return after.shape == before.shape and bool(((after == before) | (after.isnan() & before.isnan())).all())


def is_cuda_fault(e: BaseException, on_cuda: bool) -> bool:
    """Did this exception come from a CUDA fault that leaves the context unusable?"""
    if not on_cuda:
        return False
    msg = f"{type(e).__name__} {e}".lower()
    if type(e).__name__ == "AcceleratorError" or any(w in msg for w in _FAULT_WORDS):
        return True
    try:                                   # a sticky error poisons the context
        import torch
        torch.cuda.synchronize()
        return False
    except Exception:  # noqa: BLE001
        return True


def _message(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:500]


def skip_check(impl, case: Case, device: str, known_limits: bool = True) -> tuple:
    """(why ``impl`` is not run on ``case`` here, or ""; what its ``supports`` says, or "").
    ``known_limits`` False: run the inputs it declares it fails on anyway."""
    reason = skip_reason(case, device)
    if reason:
        return reason, ""
    s = impl.supports(case, device)
    if s:
        return "", ""
    if known_limits:
        return s.reason, s.reason
    b = impl.supports(case.dtype, device)   # it still must be installed, on this device, in x's dtype
    return ("" if b else b.reason), s.reason


def _blank_row(name: str, case: Case, device: str) -> dict:
    """A check row before the check: its columns, in order."""
    return {"impl": name, "case": case.label, **case.as_dict(), "device": device, "status": "",
            "err_out": float("nan"), "err_residual": float("nan"), "tolerance": TOLERANCE[case.dtype],
            "reason": "", "note": "", "declared": ""}


def check_impl(name: str, case: Case, device: str = "cpu", seed: int = 0, eps: float = 1e-6,
               inputs=None, known_limits: bool = True) -> dict:
    """Run one implementation on one case and compare both outputs with the float64 reference.

    inputs: (x, weight, residual) to use instead of ``make_inputs(case, device, seed)``; they are
    never changed (the call gets copies with the same layout). The case's own eps, when it has one,
    wins over ``eps``. ``known_limits``: skip the inputs the entry says it fails on (``supports``);
    False runs them anyway (the support matrix, to see what happens). Returns a row: impl, case,
    the case's sweep fields, device, status (one of ``STATUSES``), err_out, err_residual,
    tolerance, reason, note (warnings it raised), declared (what ``supports`` says, "" when yes);
    ``fatal`` is true when a CUDA fault left the context unusable.
    """
    import warnings

    import torch

    impl = get_impl(name)
    eps = case.eps if case.eps is not None else eps
    on_cuda = str(device).startswith("cuda")
    tol = TOLERANCE[case.dtype]
    row = _blank_row(name, case, device)
    reason, row["declared"] = skip_check(impl, case, device, known_limits)
    if reason:
        row.update(status="skip", reason=reason)
        return row
    if case.large and on_cuda and inputs is None:
        per = case.numel * case.itemsize
        need = per * (4 if case.residual and not case.residual_is_x else 2) * 1.1
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        if free < need:
            row.update(status="skip", reason=f"needs ~{need / 2**30:.0f} GiB free GPU memory, "
                                             f"{free / 2**30:.0f} GiB free")
            return row
    try:
        if inputs is None:
            inputs = make_inputs(case, device, seed)
        x, w, r = inputs
        n = x.shape[-1]
        if case.large:                  # the reference on sampled rows, taken before the call
            nrows = x.numel() // n
            rows = torch.tensor(sorted({0, 1, nrows // 2, nrows - 2, nrows - 1}), device=x.device)
            px = x.reshape(-1, n)[rows].clone()
            pr = None if r is None else r.reshape(-1, n)[rows].clone()
            xw, rw = x, r
        else:                           # the call gets copies with the same layout
            rows, px, pr = None, x, r
            xw = clone_layout(x)
            rw = xw if (r is not None and r is x) else clone_layout(r)
        ww = clone_layout(w)            # no entry documents changing the weight
    except Exception as e:  # noqa: BLE001 - e.g. out of memory building the inputs or their copies
        if is_cuda_fault(e, on_cuda):
            row.update(status="crash", reason=_message(e), fatal=True)
        else:
            row.update(status="skip", reason=f"could not build the inputs: {_message(e)}")
        return row
    reset_warnings()                    # each case reports its own warnings
    try:
        fn = impl.load()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = fn(xw, ww, rw, eps)
            if on_cuda:
                torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a refusal or a fault becomes a row
        if is_cuda_fault(e, on_cuda):
            row.update(status="crash", reason=_message(e), fatal=True)
        else:
            row.update(status="error", reason=_message(e))
        return row
    row["note"] = " | ".join(dict.fromkeys(" ".join(str(c.message).split()) for c in caught))[:300]
    try:
        res = check_outputs(px, w, pr, eps, got, tol, rows)
        changed = not _unchanged(ww, w)
        if rows is None and not (impl.inplace_residual and r is not None):
            changed = changed or not _unchanged(xw, x) or (r is not None and r is not x and not _unchanged(rw, r))
        if changed:
            res["status"] = "wrong"
            res["reason"] = "; ".join(filter(None, [res["reason"], "changed an input it does not document changing"]))
        if on_cuda:
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        if is_cuda_fault(e, on_cuda):
            row.update(status="crash", reason=_message(e), fatal=True)
            return row
        res = {"status": "wrong", "reason": f"checking the output failed: {_message(e)}"}
    row.update(res)
    return row


def check_all(cases, impls=None, device: str = "cpu", seed: int = 0, eps: float = 1e-6, jobs=None, *,
              isolated=None, imports=(), timeout_s: float = 300):
    """check_impl over cases x implementations: one DataFrame, a row per (case, implementation),
    cases outer. Case ``i``'s inputs come from seed ``seed + i``, the same for every implementation.

    jobs: child processes at once (None: ``isolate.default_jobs(device)``: 1.5 per CPU core on
    CUDA, one per core on the CPU). isolated: None: in child processes on CUDA when ``jobs`` > 1, in this
    process otherwise; True / False: always / never. In children (``isolate.run_children``) an
    implementation that compiles per case is split among several, and a process that dies, runs
    past ``timeout_s`` or faults the GPU makes its case a ``crash`` row; otherwise the rows are
    those of this process (except for an entry that fails to load: a ``skip`` with the reason on
    every case, where this process reports its first case as the ``error``). An entry only this
    process knows (registered here, not by a module of ``imports``) is checked here.
    imports: modules (dotted names or .py paths) that register implementations, imported here and
    in each child. timeout_s: per case in a child (loading: ``isolate.LOAD_TIMEOUT_FACTOR`` times it, at least ``isolate.LOAD_TIMEOUT_MIN_S``).
    ``.attrs["children"]`` of the result: where the time went, one dict per child process
    (``isolate.run_children``'s ``profile``; empty when nothing ran in children).
    """
    from .isolate import run_children

    names, cases, jobs, isolated, imports, timeout_s = _check_args(cases, impls, device, jobs, isolated, imports,
                                                                   timeout_s)
    rows, work = _check_plan(cases, names, device, seed, eps, isolated, imports)
    profile: list = []
    got = run_children(work, cases, device, jobs, timeout_s, [seed + i for i in range(len(cases))], eps,
                       imports=imports, known_limits=True, profile=profile)
    return _check_frame(rows, got, cases, names, device, profile)


def _check_args(cases, impls, device, jobs, isolated, imports, timeout_s):
    """check_all's arguments validated: (names, cases, jobs, isolated, imports, timeout_s)."""
    from .isolate import check_jobs, import_all
    from .validate import check_positive_float

    timeout_s = check_positive_float("timeout_s", timeout_s, "seconds")
    if isolated not in (None, True, False):
        raise TypeError(f"isolated: expected None, True or False, got {isolated!r} ({type(isolated).__name__})")
    imports = import_all(imports)
    names = resolve_names(impls)
    jobs = check_jobs(jobs, device)
    if isolated is None:
        isolated = str(device).startswith("cuda") and jobs > 1
    return names, list(cases), jobs, isolated, imports, timeout_s


def _check_plan(cases, names, device, seed, eps, isolated, imports) -> tuple:
    """What check_all does before its children: (rows made here, work for the children). Here: the
    skip rows, and every row of an entry that does not run in a child (``isolated`` False, or an
    entry only this process knows)."""
    from .impls import ORDER
    from .isolate import import_extra

    child_known = set(ORDER)
    for m in imports:
        child_known |= {impl.name for impl in getattr(import_extra(m), "IMPLS", [])}
    in_child = [n for n in names if isolated and n in child_known]
    here = [n for n in names if n not in in_child]

    rows: dict = {}
    for i, case in enumerate(cases):
        runs = here and not skip_reason(case, device) and any(get_impl(n).supports(case, device) for n in here)
        inputs = make_inputs(case, device, seed + i) if runs else None
        for n in here:
            row = check_impl(n, case, device, seed + i, eps, inputs=inputs)
            row.pop("fatal", None)
            rows[i, n] = row
    work = []
    for n in in_child:
        todo = []
        for i, case in enumerate(cases):
            if skip_check(get_impl(n), case, device)[0]:
                rows[i, n] = check_impl(n, case, device, seed + i, eps)      # the skip row, made here
            else:
                todo.append(i)
        if todo:
            work.append((n, todo))
    return rows, work


def _check_frame(rows: dict, got: dict, cases, names, device, profile: list):
    """check_all's DataFrame from the rows made here and the children's (``run_children``'s result)."""
    import pandas as pd

    for n, res in got.items():
        for i, r in res.items():
            row = _blank_row(n, cases[i], device)
            row.update({k: r[k] for k in ("status", "err_out", "err_residual", "reason", "note", "declared")
                        if k in r})
            rows[i, n] = row
    df = pd.DataFrame([rows[i, n] for i in range(len(cases)) for n in names])
    df.attrs["children"] = profile
    return df
