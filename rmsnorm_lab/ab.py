"""Interleaved A/B timing: several subjects on the same inputs, in rounds whose order rotates.

A cold figure can move between processes and over minutes by more than its p20-p80 band, so a
comparison is only fair inside one process with the subjects interleaved. ``interleave`` times every
subject on every input in every mode, once per round, rotating the order of the subjects each round,
with a fresh ``timing.Runner`` per timing; ``ABResult`` gives the median of the rounds per subject with
its min-max spread, and its ratio to a baseline subject::

    from rmsnorm_lab import ab
    subjects = {"a": ab.Subject(fn_a), "b": ab.Subject(fn_b, inplace=True), **ab.from_registry(peer_names, "cuda")}
    res = ab.interleave(subjects, ab.inputs_for(cases, "cuda"), modes=("cold", "graph"), rounds=5)
    print(res.table(baseline="a")); res.to_csv("out/ab.csv")

A subject is a callable ``fn(x, weight, residual, eps)`` (the registry's convention) and whether it
writes its inputs in place (the runner then restores them outside the timed region).
"""
from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .analysis import geomean
from .timing import MODES, Runner, time_runner

FIELDS = ["input", "subject", "round", "mode", "us_median", "us_p20", "us_p80", "n", "error"]


@dataclass(frozen=True)
class Subject:
    """One thing to time: ``fn(x, weight, residual, eps)``; ``inplace``: it writes x and the residual."""
    fn: Callable
    inplace: bool = False


def _subjects(subjects) -> dict[str, Subject]:
    if not isinstance(subjects, dict) or not subjects:
        raise ValueError("subjects: expected a non-empty dict of name -> Subject | callable | (callable, inplace)")
    out = {}
    for name, s in subjects.items():
        if isinstance(s, Subject):
            out[str(name)] = s
        elif isinstance(s, tuple) and len(s) == 2 and callable(s[0]):
            out[str(name)] = Subject(s[0], bool(s[1]))
        elif callable(s):
            out[str(name)] = Subject(s)
        else:
            raise TypeError(f"subjects: {name!r} must be a Subject, a callable or (callable, inplace), "
                            f"got {type(s).__name__}")
    return out


def from_registry(names, device: str = "cuda", log=print) -> dict[str, Subject]:
    """Subjects for registry implementations that can run on ``device`` (the others are logged and left out)."""
    from .impls import load_available
    return {n: Subject(fn, inplace) for n, (fn, inplace) in load_available(list(names), device, log).items()}


def inputs_for(cases, device: str, seed: int = 0) -> dict[str, tuple]:
    """label -> (x, weight, residual or None) for each case (``rmsnorm_lab.cases.Case``), made once, seeded.
    The label is the case's name, else ``<hidden>x<tokens>[+res] <dtype>``; two cases with one label are a
    ValueError (name them), never one input silently standing for both."""
    from .cases import make_inputs
    out = {}
    for c in cases:
        label = c.name or f"{c.hidden}x{c.tokens}{'+res' if c.residual else ''} {c.dtype}"
        if label in out:
            raise ValueError(f"cases: two cases have the input label {label!r}; give them distinct names (Case.name)")
        out[label] = tuple(make_inputs(c, device, seed))
    return out


def rotate(names: list, k: int) -> list:
    """names rotated left by k (round k's order)."""
    if not names:
        return []
    k %= len(names)
    return names[k:] + names[:k]


def interleave(subjects, inputs: dict, *, modes=("cold",), device: str = "cuda", rounds: int = 3,
               budget_ms: float = 10.0, eps: float = 1e-6, on_row: Callable | None = None,
               time_fn: Callable = time_runner) -> "ABResult":
    """Time every subject on every input in every mode, ``rounds`` times in rotating order.

    ``inputs``: label -> (x, weight, residual or None), shared by every subject (see ``inputs_for``).
    A timing that raises becomes a row with ``error`` set; the rounds go on. ``on_row(row)`` sees each
    row as it is measured (progress, a CSV written as it goes).
    """
    subj = _subjects(subjects)
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError("inputs: expected a non-empty dict of label -> (x, weight, residual)")
    modes = tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise ValueError(f"modes: expected some of {', '.join(MODES)}, got {list(modes)}")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds: expected a positive integer, got {rounds!r}")
    names = list(subj)
    rows = []
    for rnd in range(rounds):
        for label, (x, w, r) in inputs.items():
            for name in rotate(names, rnd):
                s = subj[name]
                for m in modes:
                    row = {"input": label, "subject": name, "round": rnd + 1, "mode": m}
                    try:
                        t = time_fn(Runner(s.fn, x, w, r, eps, s.inplace), m, device, budget_ms=budget_ms)
                        row.update(us_median=t.median_us, us_p20=t.p20_us, us_p80=t.p80_us, n=t.n)
                    except Exception as e:  # noqa: BLE001 - an error row, the rounds go on
                        row["error"] = f"{type(e).__name__}: {e}"[:200]
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
    return ABResult(rows, names, list(inputs), list(modes))


class ABResult:
    """The rows of an interleaved run and what they say: medians of the rounds, spreads, ratios."""

    def __init__(self, rows: list[dict], subjects: list[str], inputs: list[str], modes: list[str]):
        self.rows, self.subjects, self.inputs, self.modes = rows, subjects, inputs, modes

    def summary(self, baseline: str | None = None) -> list[dict]:
        """Per (input, mode, subject): median of the rounds' medians, min, max, rounds, errors, and
        ``ratio`` = its median / the baseline's median (baseline: the first subject unless named)."""
        base = baseline if baseline is not None else self.subjects[0]
        if base not in self.subjects:
            raise ValueError(f"baseline: {base!r} is not one of the subjects ({', '.join(self.subjects)})")
        out = []
        for label in self.inputs:
            for m in self.modes:
                med = {}
                for name in self.subjects:
                    got = [r for r in self.rows if (r["input"], r["mode"], r["subject"]) == (label, m, name)]
                    v = [r["us_median"] for r in got if "us_median" in r]
                    med[name] = {"input": label, "mode": m, "subject": name, "rounds": len(v),
                                 "errors": len(got) - len(v),
                                 "us_median": statistics.median(v) if v else float("nan"),
                                 "us_min": min(v) if v else float("nan"), "us_max": max(v) if v else float("nan")}
                b = med[base]["us_median"]
                for row in med.values():
                    row["ratio"] = row["us_median"] / b if b == b and b > 0 else float("nan")
                    out.append(row)
        return out

    def geomean_ratios(self, baseline: str | None = None) -> dict:
        """(mode, subject) -> geometric mean over the inputs of its ratio to the baseline."""
        s = self.summary(baseline)
        return {(m, n): geomean([r["ratio"] for r in s if (r["mode"], r["subject"]) == (m, n)])
                for m in self.modes for n in self.subjects}

    def frame(self, baseline: str | None = None):
        """The summary as a pandas DataFrame."""
        import pandas as pd
        return pd.DataFrame(self.summary(baseline))

    def table(self, baseline: str | None = None) -> str:
        """Text: per input and mode, each subject's median (min-max) in µs and [its ratio to the baseline]."""
        s = self.summary(baseline)
        base = baseline if baseline is not None else self.subjects[0]
        n = max((r["rounds"] for r in s), default=0)
        lines = [f"median of {n} rounds (min-max), us; [subject / {base}]"]
        for label in self.inputs:
            for m in self.modes:
                cells = [f"{r['subject']} {r['us_median']:.2f} ({r['us_min']:.2f}-{r['us_max']:.2f}) [{r['ratio']:.3f}]"
                         + (f" {r['errors']} errors" if r["errors"] else "")
                         for r in s if (r["input"], r["mode"]) == (label, m)]
                lines.append(f"  {label} {m}: " + "  ".join(cells))
        for (m, name), g in self.geomean_ratios(baseline).items():
            if name != base:
                lines.append(f"{m}: {name} / {base} geomean {g:.4f} over {len(self.inputs)} inputs")
        return "\n".join(lines)

    def to_csv(self, path) -> Path:
        """Every timing, one row each (``FIELDS``)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: r.get(k, "") for k in FIELDS})
        return p


def outputs(subjects, x, w, r, eps: float = 1e-6) -> dict:
    """Each subject's result on clones of the inputs (to compare subjects with each other before timing)."""
    return {name: s.fn(x.clone(), w, None if r is None else r.clone(), eps) for name, s in _subjects(subjects).items()}


__all__ = ["Subject", "from_registry", "inputs_for", "rotate", "interleave", "ABResult", "outputs", "FIELDS"]
