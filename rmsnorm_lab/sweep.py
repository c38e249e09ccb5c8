"""The sweep: cases x implementations x timing modes -> tidy rows, saved as measured.

``variant`` (plain RMSNorm by default, or gemma / qk-norm / fp8-static / fp8-per-token) and
``passes`` (fwd by default, bwd, fwd+bwd) choose what is measured; ``models`` (names or "all",
rmsnorm_lab.models) replaces the grid by real models' hidden sizes x the token counts of
``models_split``, each row naming its models (column ``models``): plain fwd through the
registry (rmsnorm_lab.impls), the others through rmsnorm_lab.points (the variants' and the
backward's subjects, their checkers and bytes models); every point is checked, then timed
by the same harness, into the same rows (columns ``variant`` and ``pass``).

The CLI, ``get_benchmark`` and the notebooks all call ``run_sweep``, so they
cannot disagree. A failing or unavailable implementation becomes an error or
skip row with its reason; the sweep goes on.
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import asdict, dataclass, field

from . import points
from .cases import SEED_BATCH, SEED_HIDDEN, SEED_SEQ, Case, make_cases, make_inputs, tokens_to_batch_seq
from .check import check_impl
from .impls import get_impl, resolve_names
from .timing import HARNESSES, Runner, time_runner
from .validate import (check_bool, check_bool_list, check_dtypes, check_eps, check_int_list, check_modes,
                       check_path, check_positive_float, check_seed, check_workers, suggest)


@dataclass
class SweepConfig:
    """Everything a sweep needs; every field has a documented default (the seed's grid)."""
    hidden: list = field(default_factory=lambda: list(SEED_HIDDEN))
    batch: list = field(default_factory=lambda: list(SEED_BATCH))
    seq: list = field(default_factory=lambda: list(SEED_SEQ))
    tokens: list | None = None           # instead of batch x seq: token counts (rows)
    dtypes: list = field(default_factory=lambda: ["bfloat16"])
    residual: list = field(default_factory=lambda: [False, True])
    impls: list | str = "all"
    modes: list | None = None            # default: cold + graph on CUDA, cold + eager on CPU
    device: str = "auto"
    save_path: str | None = None
    eps: float = 1e-6
    seed: int = 0
    check: bool = True                   # correctness check of every (impl, case) before timing
    copy_ceiling: bool = True            # cold mode: also time a copy of each case's bytes (pct_copy_same)
    budget_ms: float = 40.0              # timing budget per point and mode (fast harness: at most this)
    harness: str = "fast"                # fast: stop once the median is known to 1% (budget_ms at most);
    #                                      thorough: budget_ms of samples per point (more samples, same medians)
    prewarm: int = -1                    # worker processes that compile ahead on CUDA (-1: auto, 0: off)
    progress: bool | None = None         # None: on in a terminal or notebook, off otherwise
    command: str | None = None
    variant: str = "plain"               # plain | gemma | qk-norm | fp8-static | fp8-per-token (rmsnorm_lab.variants)
    passes: list | str = field(default_factory=lambda: ["fwd"])   # fwd | bwd | fwd+bwd (bwd: rmsnorm_lab.backward)
    head_dim: int = 128                  # qk-norm: the head size; hidden is then the width of q (heads x head_dim)
    models: list | str | None = None     # real models' shapes instead of hidden x tokens: names or "all" (rmsnorm_lab.models)
    models_split: str = "validate"       # with models: which token counts: tune | validate | all

    def validate(self) -> "SweepConfig":
        from . import models as _models
        from .device import resolve_device, use_triton_interpreter_on_cpu
        self.models_split = _models.check_split(self.models_split)
        if self.models in (None, "", []):
            self.models = None
        else:                                # the models' hidden sizes x the split's token counts
            self.models = _models.check_models(self.models)
            # token counts of a split pass: a config validated once carries them and validates again
            if self.tokens not in (None, []) and \
                    check_int_list("tokens", self.tokens) not in [list(t) for t in _models.SPLIT_TOKENS.values()]:
                raise ValueError(f"tokens: got {self.tokens!r} with models; the models' token counts come from "
                                 f"models_split: leave tokens None (or models None to sweep hidden x tokens)")
            self.hidden, self.tokens = _models.shapes(self.models, self.models_split)
        self.hidden = check_int_list("hidden_size", self.hidden)
        if self.tokens is not None:
            self.tokens = check_int_list("tokens", self.tokens)
        else:
            self.batch = check_int_list("batch_size", self.batch)
            self.seq = check_int_list("seq_len", self.seq)
        self.dtypes = check_dtypes(self.dtypes)
        self.residual = check_bool_list("residual", self.residual)
        self.variant = points.check_variant(self.variant)
        self.passes = points.check_passes(self.passes)
        self.head_dim = points.check_head_dim(self.head_dim, self.hidden, self.variant)
        self.residual = points.check_combination(self.variant, self.passes, self.dtypes, self.residual)
        if self.passes == ["fwd"] and self.variant == points.PLAIN:
            self.impls = resolve_names(self.impls)
        else:
            self.impls = points.resolve_impls(self.impls, self.variant, self.passes)
        self.device = resolve_device(self.device)
        use_triton_interpreter_on_cpu(self.device)
        self.modes = check_modes(self.modes, self.device)
        self.eps = check_eps(self.eps)
        self.seed = check_seed(self.seed)
        self.check = check_bool("check", self.check)
        self.copy_ceiling = check_bool("copy_ceiling", self.copy_ceiling)
        if self.progress is not None:
            self.progress = check_bool("progress", self.progress)
        self.budget_ms = check_positive_float("budget_ms", self.budget_ms, "milliseconds")
        if self.harness not in HARNESSES:
            raise ValueError(f"harness: expected one of {', '.join(HARNESSES)}, got {self.harness!r}"
                             f"{suggest(str(self.harness), list(HARNESSES))}")
        self.prewarm = check_workers("prewarm", self.prewarm)
        if check_path("save_path", self.save_path) is not None:
            from .results import check_writable
            self.save_path = str(check_writable(self.save_path))
        return self

    def cases(self) -> list[Case]:
        if self.tokens is not None:
            bs = [tokens_to_batch_seq(t) for t in self.tokens]
            out = []
            for d in self.dtypes:
                for r in self.residual:
                    for h in self.hidden:
                        out += [Case(b, s, h, d, r) for b, s in bs]
            return out
        return make_cases(self.hidden, self.batch, self.seq, self.dtypes, self.residual)


def _progress(total, enabled):
    from .progress import progress
    return progress(total, enabled)


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def _free(device):
    import gc
    gc.collect()
    if device.startswith("cuda"):
        import torch
        torch.cuda.empty_cache()


def _baseline() -> set:
    """The entries speedups are measured against (the registry's ``baseline`` role)."""
    from .impls import by_role
    return set(by_role("baseline"))


def _registry_names(names) -> list:
    """The names of ``names`` that are registry entries (the plain forward's implementations)."""
    from .impls import registry
    reg = registry()
    return [n for n in names if n in reg]


def _check_kwargs(kwargs) -> None:
    from dataclasses import fields
    names = [f.name for f in fields(SweepConfig)]
    for k in kwargs:
        if k not in names:
            raise TypeError(f"run_sweep: unknown parameter {k!r}; expected one of {', '.join(names)}"
                            f"{suggest(k, names)}")


def run_sweep(config: SweepConfig | None = None, **kwargs):
    """Measure every (case, implementation, mode); returns the DataFrame of rows.

    With ``save_path`` the rows go to ``save_path/results.csv`` as measured and
    the environment to ``env.json``; points already there are not measured again.
    """
    import pandas as pd
    import torch

    from . import envinfo
    from .bandwidth import measure_copy_bandwidth, same_size_copy_runner
    from .device import device_name, use_expandable_segments
    from .results import ResultStore

    _check_kwargs(kwargs)
    if config is not None and not isinstance(config, SweepConfig):
        raise TypeError(f"config: expected a SweepConfig or None, got {type(config).__name__}")
    # a config given alone is validated in place (its fields normalized: impls as a list, modes
    # resolved), so a caller can read what ran from it; keyword arguments make a new config
    if config is not None and not kwargs:
        cfg = config.validate()
    else:
        cfg = SweepConfig(**{**(asdict(config) if config is not None else {}), **kwargs}).validate()
    dev = cfg.device
    allocator = use_expandable_segments() if dev.startswith("cuda") else ""
    gpu = device_name(dev)
    store = ResultStore(cfg.save_path) if cfg.save_path else None
    command = cfg.command or " ".join(sys.argv)
    t_start = time.perf_counter()
    phases = Phases()
    with phases.timed("copy_bandwidth"):
        copy_gbps = measure_copy_bandwidth(dev)
    meta = envinfo.collect(dev, copy_gbps, command)
    meta["config"] = asdict(cfg)
    if allocator:
        meta["allocator"] = allocator
    if store:
        store.write_meta(meta)

    cases = cfg.cases()
    model_names = {}
    if cfg.models:
        from .models import names_by_hidden
        model_names = names_by_hidden(cfg.models)
    plain_fwd = "fwd" in cfg.passes and cfg.variant == points.PLAIN
    if dev.startswith("cuda") and cfg.prewarm != 0 and plain_fwd:
        from .prewarm import prewarm_cases
        with phases.timed("prewarm"):
            meta["prewarm"] = prewarm_cases(cases, _registry_names(cfg.impls), dev, cfg.prewarm)
    if dev.startswith("cuda") and "graph" in cfg.modes and any(p != "fwd" for p in cfg.passes):
        from .backward import warm_graph_capture
        warm_graph_capture()
    sm_count = 0                           # the backward's bytes model counts one fp32 dw partial row per SM
    if dev.startswith("cuda") and any(p != "fwd" for p in cfg.passes):
        sm_count = torch.cuda.get_device_properties(dev).multi_processor_count
    rows: list[dict] = []
    hf_us: dict = {}
    baselines = {p: (_baseline() if points.is_plain(cfg.variant, p) else points.baseline(cfg.variant, p))
                 for p in cfg.passes}
    if store:   # baseline timings from an earlier, resumed run
        for r in store.rows:
            if r.get("status") == "ok" and r.get("impl") in baselines.get(r.get("pass"), ()):
                hf_us[(r["dtype"], str(r["hidden"]), str(r["batch"]), str(r["seq"]), str(r["residual"]),
                       r["mode"], r.get("variant"), r.get("pass"))] = float(r["us_median"])
    # each pass's implementations, its baseline first (speedups are measured against it)
    names_of = {p: sorted((n for n in cfg.impls if n in points.subject_names(cfg.variant, p)),
                          key=lambda n, p=p: n not in baselines[p] and not points.is_plain(cfg.variant, p))
                for p in cfg.passes}
    bar = _progress(len(cases) * sum(len(v) for v in names_of.values()), cfg.progress)

    def emit(row):
        row.setdefault("timestamp", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        row.setdefault("command", command)
        rows.append(row)
        if store:
            store.add(row)

    copy_us: dict = {}

    def copy_same(nbytes, mode):
        """µs of a copy of these bytes in this mode (timed once per byte count and mode), or None."""
        key = (nbytes, mode)
        if key not in copy_us:
            try:
                with phases.timed("copy_ceiling"):
                    copy_us[key] = time_runner(same_size_copy_runner(nbytes, dev), mode, dev,
                                               budget_ms=cfg.budget_ms, harness=cfg.harness).median_us
            except Exception:  # noqa: BLE001 - a ceiling we could not time is left out, not an error row
                copy_us[key] = None
                if dev.startswith("cuda"):
                    _free(dev)
        return copy_us[key]

    def time_modes(common, todo, case, pass_, fn, x, w, r, inplace, nbytes, setup_s, chk):
        """Time one checked (case, implementation) in every mode still to do; one row per mode."""
        name = common["impl"]
        correct = chk.get("status") == "ok" if chk else ""
        for m in todo:
            row = {**common, "mode": m, "setup_s": round(setup_s, 3),
                   "err_out": chk.get("err_out", ""), "err_residual": chk.get("err_residual", ""),
                   "correct": correct, "error": chk.get("reason", "") if chk else ""}
            for k in ("err_dw", "fp8_frac_off", "scale_err"):
                if k in chk:
                    row[k] = chk[k]
            oom = False
            try:
                runner = Runner(fn, x, w, r, cfg.eps, inplace)
                with phases.timed(f"time_{m}:{name}"):
                    t = time_runner(runner, m, dev, budget_ms=cfg.budget_ms, harness=cfg.harness)
                if not runner.outputs_finite():
                    row["correct"] = False
                    row["error"] = (row["error"] + "; " if row["error"] else "") + \
                        "non-finite output after timing"
                gbps = nbytes / (t.median_us * 1e-6) / 1e9
                row.update(status="ok", us_median=round(t.median_us, 3), us_p20=round(t.p20_us, 3),
                           us_p80=round(t.p80_us, 3), n_samples=t.n, gbps=round(gbps, 1),
                           pct_copy=round(100 * gbps / copy_gbps, 1), note=t.note)
                if cfg.copy_ceiling and m == "cold":
                    cu = copy_same(nbytes, m)
                    if cu:
                        row.update(copy_same_us=round(cu, 3), pct_copy_same=round(100 * cu / t.median_us, 1))
                hkey = (case.dtype, str(case.hidden), str(case.batch), str(case.seq), str(case.residual), m,
                        cfg.variant, pass_)
                if name in baselines[pass_]:
                    hf_us[hkey] = t.median_us
                if hkey in hf_us:
                    # 4 significant digits, so a 2000x slower impl (Triton's CPU interpreter) is not 0.0
                    row["speedup_vs_hf"] = float(f"{hf_us[hkey] / t.median_us:.4g}")
                del runner
            except NotImplementedError as e:
                row.update(status="skip", error=str(e))
            except Exception as e:  # noqa: BLE001
                row.update(status="error", error=f"{type(e).__name__}: {e}".strip()[:500])
                oom = _is_oom(e)
            if oom:    # after the except block: its traceback holds the failed point's tensors until then
                _free(dev)
            emit(row)

    def error_rows(common, todo, e):
        msg = f"{type(e).__name__}: {e}".strip()[:500]
        for m in todo:
            emit({**common, "mode": m, "status": "error", "error": msg})

    for ci, case in enumerate(cases):
        for pass_ in cfg.passes:
            plain = points.is_plain(cfg.variant, pass_)
            data = None if plain else points.CaseData(case, cfg.variant, pass_, dev, cfg.seed + ci, cfg.eps,
                                                      cfg.head_dim)
            nbytes = case.bytes_moved if plain else None
            base = {"device": dev, "gpu_name": gpu, "dtype": case.dtype, "batch": case.batch, "seq": case.seq,
                    "tokens": case.tokens, "hidden": case.hidden, "residual": case.residual,
                    "bytes": nbytes, "copy_gbps": round(copy_gbps, 1), "variant": cfg.variant, "pass": pass_,
                    "head_dim": cfg.head_dim if cfg.variant == "qk-norm" else "",
                    "models": model_names.get(case.hidden, "")}
            inputs = None
            for name in names_of[pass_]:
                todo = [m for m in cfg.modes if not (store and store.done({**base, "impl": name, "mode": m}))]
                if bar:
                    bar.set_postfix_str(f"{name} {case.dtype} {case.hidden}x{case.tokens} res={int(case.residual)}"
                                        + ("" if plain else f" {cfg.variant} {pass_}"))
                if not todo:
                    if bar:
                        bar.update(1)
                    continue
                if not plain:
                    common = {**base, "impl": name, "label": points.label(name, cfg.variant, pass_)}
                    s = points.support(name, case, cfg.variant, pass_, dev)
                    if not s:
                        for m in todo:
                            emit({**common, "mode": m, "status": "skip", "error": s.reason})
                    else:
                        oom = False
                        try:
                            with phases.timed(f"check:{name}"):
                                p = points.prepare(name, data, cfg.check, sm_count)
                            common["bytes"] = p.nbytes
                        except NotImplementedError as e:      # failed to load: the reason it cannot run here
                            for m in todo:
                                emit({**common, "mode": m, "status": "skip", "error": str(e)})
                            p = None
                        except Exception as e:  # noqa: BLE001 - becomes an error row
                            error_rows(common, todo, e)
                            p = None
                            oom = _is_oom(e)
                        if oom:    # freed after the except block (its traceback holds the point's tensors)
                            _free(dev)
                        if p is not None:
                            time_modes(common, todo, case, pass_, p.fn, p.x, p.w, p.r, p.inplace, p.nbytes,
                                       p.setup_s, p.check)
                            del p
                    if bar:
                        bar.update(1)
                    continue
                impl = get_impl(name)
                common = {**base, "impl": name, "label": impl.label}
                s = impl.supports(case.dtype, dev)
                if not s:
                    for m in todo:
                        emit({**common, "mode": m, "status": "skip", "error": s.reason})
                    if bar:
                        bar.update(1)
                    continue
                failed = oom = False
                try:
                    if inputs is None:
                        with phases.timed("inputs"):
                            inputs = make_inputs(case, dev, cfg.seed + ci)
                    with phases.timed(f"load:{name}"):
                        fn = impl.load()
                    t0 = time.perf_counter()
                    x, w, r = inputs
                    warm = getattr(fn, "warm", None)
                    if warm is not None:
                        setup_s = warm(x, w, r, cfg.eps)
                    else:
                        fn(x.clone(), w, None if r is None else r.clone(), cfg.eps)
                        if dev.startswith("cuda"):
                            torch.cuda.synchronize()
                        setup_s = time.perf_counter() - t0
                    phases.add(f"first_call:{name}", time.perf_counter() - t0)
                    with phases.timed(f"check:{name}"):
                        chk = check_impl(name, case, dev, cfg.seed + ci, cfg.eps, inputs=inputs) if cfg.check else {}
                except Exception as e:  # noqa: BLE001 - becomes an error row
                    error_rows(common, todo, e)
                    failed, oom = True, _is_oom(e)
                if failed:
                    if oom:    # freed after the except block (its traceback holds the point's tensors)
                        inputs = None
                        _free(dev)
                    if bar:
                        bar.update(1)
                    continue
                if chk.get("status") in ("error", "skip"):
                    for m in todo:
                        emit({**common, "mode": m, "status": chk["status"], "error": chk["reason"]})
                    if bar:
                        bar.update(1)
                    continue
                time_modes(common, todo, case, pass_, fn, x, w, r, impl.inplace_residual, case.bytes_moved,
                           setup_s, chk)
                if bar:
                    bar.update(1)
            inputs = data = None
    if bar:
        bar.close()
    phases.add("other", time.perf_counter() - t_start - sum(phases.seconds.values()))   # rows, files, loops
    meta["phases"] = phases.as_dict()
    if store:
        meta["wall_s"] = round(time.perf_counter() - t_start, 1)
        meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        store.write_meta(meta)
        from .results import load_results
        df = load_results(store.dir)
    else:
        df = pd.DataFrame(rows)
        df.attrs["env"] = meta
    return df


class Phases:
    """Wall seconds per phase of a sweep (``copy_bandwidth``, ``prewarm``, ``load:<impl>``,
    ``first_call:<impl>`` (compile/JIT), ``check:<impl>``, ``time_<mode>:<impl>``, ``copy_ceiling``,
    ``other``: the rest of the wall time), summed over points; written to env.json as ``phases``."""

    def __init__(self):
        self.seconds: dict = {}

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def timed(self, key: str):
        import contextlib

        @contextlib.contextmanager
        def cm():
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.add(key, time.perf_counter() - t0)
        return cm()

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def summarize(df, mode: str | None = None):
    """Pivot of median µs: one row per shape (and pass, when there are several), one column per implementation."""
    d = df[df["status"] == "ok"]
    if mode:
        d = d[d["mode"] == mode]
    if d.empty:
        return d
    index = ["dtype", "residual", "hidden", "tokens"]
    if "pass" in d and d["pass"].nunique() > 1:         # forward and backward rows of one run: kept apart
        index = ["pass"] + index
    return d.pivot_table(index=index, columns="impl", values="us_median", aggfunc="first")
