"""Packaging: environment.yml and pyproject.toml name the same packages, and
``import rmsnorm_lab`` stays light (no torch, pandas, matplotlib, triton or peer).

The rule that keeps environment.yml and pyproject.toml from drifting apart:

1. Every core dependency of pyproject (``[project] dependencies``) is listed
   explicitly in environment.yml (a conda package or a pip entry), with the same
   version specifier.
2. Every package of the extras notebooks / report / test / triton / gpu is named
   in environment.yml in one of three ways: its extra is installed by the pip
   ``-e .[extra,...]`` line (extras that extras pull in, ``rmsnorm-lab[report]``,
   count too); the package is listed explicitly; or its extra is declared in a
   comment line ``# extra NAME: pkg pkg ...`` (for extras that cannot be installed
   there, like the CUDA-only peers), which must list exactly that extra's packages.
3. environment.yml names no package that pyproject lacks (apart from python and
   pip), and its ``-e .[...]`` line names only extras pyproject defines.

Names are compared normalized (PEP 503: case, ``-``, ``_`` and ``.`` alike).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENV_YML = ROOT / "environment.yml"
CHECKED_EXTRAS = ("notebooks", "report", "test", "triton", "gpu")
CONDA_ONLY = {"python", "pip"}          # environment tooling, not Python dependencies


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- parsing


def _pyproject():
    data = tomllib.loads(PYPROJECT.read_text())
    proj = data["project"]
    self_name = norm(proj["name"])
    core = {norm(Requirement(r).name): Requirement(r) for r in proj.get("dependencies", [])}
    extras: dict[str, dict[str, Requirement]] = {}
    includes: dict[str, set[str]] = {}           # extra -> extras it pulls in through rmsnorm-lab[...]
    for extra, reqs in proj.get("optional-dependencies", {}).items():
        extras[extra], includes[extra] = {}, set()
        for r in reqs:
            req = Requirement(r)
            if norm(req.name) == self_name:
                includes[extra] |= set(req.extras)
            else:
                extras[extra][norm(req.name)] = req
    return self_name, core, extras, includes


def _closure(names, includes) -> set[str]:
    """The extras installed by asking for ``names`` (following rmsnorm-lab[...] self references)."""
    seen, todo = set(), list(names)
    while todo:
        e = todo.pop()
        if e not in seen:
            seen.add(e)
            todo += sorted(includes.get(e, ()))
    return seen


_EDITABLE = re.compile(r"^-e\s+(?P<path>\.[^\[\s]*)(?:\[(?P<extras>[^\]]*)\])?\s*$")
_EXTRA_COMMENT = re.compile(r"^\s*#\s*extra\s+(?P<extra>[\w-]+)\s*:\s*(?P<pkgs>.*)$")


def _conda_name(spec: str) -> str:
    """'python=3.11' / 'numpy >=1.24' / 'conda-forge::pip' -> the package name."""
    spec = spec.split("::")[-1].strip()
    return norm(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0))


def _env():
    """(parsed yaml, {name: (where, spec)}, editable extras or None, {extra: names} from comments)."""
    text = ENV_YML.read_text()
    data = yaml.safe_load(text)
    listed: dict[str, tuple[str, str]] = {}
    editable = None
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"environment.yml: unexpected mapping in dependencies: {dep}"
            for entry in dep["pip"]:
                entry = str(entry).strip()
                m = _EDITABLE.match(entry)
                if m:
                    assert editable is None, "environment.yml: more than one '-e .' line in the pip list"
                    editable = {e.strip() for e in (m.group("extras") or "").split(",") if e.strip()}
                    continue
                assert not entry.startswith("-"), f"environment.yml: unexpected pip option {entry!r}"
                req = Requirement(entry)
                listed[norm(req.name)] = ("pip", str(req.specifier))
        else:
            listed[_conda_name(str(dep))] = ("conda", str(dep))
    declared = {}
    for line in text.splitlines():
        m = _EXTRA_COMMENT.match(line)
        if m:
            declared[m.group("extra")] = {norm(p) for p in m.group("pkgs").split()}
    return data, listed, editable, declared


# ---------------------------------------------------------------- the rule


def drift_problems() -> list[str]:
    """Every way environment.yml and pyproject.toml disagree, as readable lines (empty: in sync)."""
    self_name, core, extras, includes = _pyproject()
    data, listed, editable, declared = _env()
    problems = []

    # the -e line: a real path, known extras
    if editable is None:
        problems.append("environment.yml: no '-e .[extras]' line in the pip list (the package itself)")
        editable = set()
    for e in sorted(editable - set(extras)):
        problems.append(f"environment.yml: '-e .[...]' names extra {e!r}, which pyproject.toml does not define "
                        f"(known: {', '.join(sorted(extras))})")
    for extra, inc in includes.items():
        for e in sorted(inc - set(extras)):
            problems.append(f"pyproject.toml: extra {extra!r} includes {self_name}[{e}], an undefined extra")
    installed = _closure(editable, includes)

    # 1. core dependencies, explicitly and with the same specifier
    for name, req in core.items():
        if name not in listed:
            problems.append(f"core dependency {str(req)!r} (pyproject.toml) is missing from environment.yml")
        elif listed[name][0] == "pip" and listed[name][1] != str(req.specifier):
            problems.append(f"core dependency {name}: pyproject.toml says {str(req.specifier) or 'any version'!r}, "
                            f"environment.yml says {listed[name][1] or 'any version'!r}")

    # 2. the extras' packages
    for extra in CHECKED_EXTRAS:
        if extra not in extras:
            problems.append(f"pyproject.toml: extra {extra!r} is missing from [project.optional-dependencies]")
            continue
        if extra in declared:
            want = set(extras[extra])
            if declared[extra] != want:
                problems.append(f"environment.yml: comment '# extra {extra}:' lists {sorted(declared[extra])}, "
                                f"pyproject.toml's extra {extra!r} has {sorted(want)}")
        for name, req in extras[extra].items():
            if extra in installed or name in listed or name in declared.get(extra, ()):
                continue
            problems.append(f"extra {extra!r} package {str(req)!r} (pyproject.toml) is not named in environment.yml "
                            f"(add {extra!r} to the '-e .[...]' line, list it, or declare '# extra {extra}: ...')")
    for extra in sorted(set(declared) - set(extras)):
        problems.append(f"environment.yml: comment '# extra {extra}:' names an extra pyproject.toml does not define")

    # 3. nothing environment.yml names that pyproject lacks
    known = set(core) | {n for reqs in extras.values() for n in reqs}
    for name, (where, spec) in sorted(listed.items()):
        if name not in known and name not in CONDA_ONLY:
            problems.append(f"environment.yml lists {spec or name!r} ({where}), which pyproject.toml does not name")
    return problems


def test_environment_yml_basics():
    data, listed, editable, _ = _env()
    assert data["name"] == "rmsnorm-lab"
    assert data["channels"] == ["conda-forge"]
    assert listed.get("python") == ("conda", "python=3.11")
    assert "pip" in listed
    assert editable == {"notebooks", "test"}


def test_environment_yml_matches_pyproject():
    problems = drift_problems()
    assert not problems, "environment.yml and pyproject.toml drifted apart:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("edit,expect", [
    # a core dependency dropped from environment.yml
    (lambda t: t.replace("      - tqdm>=4.66\n", ""), "core dependency 'tqdm>=4.66'"),
    # a changed lower bound
    (lambda t: t.replace("pandas>=2.0", "pandas>=1.5"), "core dependency pandas: pyproject.toml says '>=2.0'"),
    # a package pyproject lacks
    (lambda t: t.replace("      - tqdm>=4.66\n", "      - tqdm>=4.66\n      - seaborn\n"),
     "environment.yml lists 'seaborn' (pip), which pyproject.toml does not name"),
    # an extra no longer installed through the -e line
    (lambda t: t.replace("-e .[notebooks,test]", "-e .[test]"), "extra 'notebooks' package 'jupyterlab>=4.0'"),
    # an unknown extra on the -e line
    (lambda t: t.replace("-e .[notebooks,test]", "-e .[notebooks,test,docs]"), "names extra 'docs'"),
    # the gpu declaration out of date
    (lambda t: t.replace("# extra gpu: flashinfer-python vllm liger-kernel quack-kernels",
                         "# extra gpu: flashinfer-python vllm liger-kernel"),
     "comment '# extra gpu:' lists"),
    (lambda t: t.replace("# extra gpu: flashinfer-python vllm liger-kernel quack-kernels", "#"),
     "extra 'gpu' package 'quack-kernels'"),
])
def test_drift_is_detected(edit, expect, monkeypatch, tmp_path):
    """The rule catches each kind of drift, with a message that says what to fix."""
    original = ENV_YML.read_text()
    edited = edit(original)
    assert edited != original, "the edit did not apply: update this test together with environment.yml"
    f = tmp_path / "environment.yml"
    f.write_text(edited)
    monkeypatch.setattr(sys.modules[__name__], "ENV_YML", f)
    problems = drift_problems()
    assert any(expect in p for p in problems), problems


def test_pyproject_drift_is_detected(monkeypatch, tmp_path):
    """A package added to a pyproject extra, but not to environment.yml, is reported."""
    text = PYPROJECT.read_text().replace('"nbval>=0.11"]', '"nbval>=0.11", "pytest-timeout"]')
    assert "pytest-timeout" in text
    f = tmp_path / "pyproject.toml"
    f.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PYPROJECT", f)
    # 'test' is on the -e line, so the new package comes with it: still in sync
    assert drift_problems() == []
    text = PYPROJECT.read_text().replace('"quack-kernels"]', '"quack-kernels", "sgl-kernel"]')
    f.write_text(text)
    assert any("comment '# extra gpu:' lists" in p for p in drift_problems())
    text = PYPROJECT.read_text().replace('"tqdm>=4.66",', '"tqdm>=4.66",\n    "rich>=13",')
    f.write_text(text)
    assert any("core dependency 'rich>=13'" in p for p in drift_problems())


# ---------------------------------------------------------------- import rmsnorm_lab is light

# the heavy dependencies and every optional peer (their import names)
HEAVY = ("torch", "pandas", "matplotlib", "triton", "numpy", "flashinfer", "vllm", "liger_kernel", "quack",
         "cutlass", "papermill")

_PROBE = """
import json, sys
before = set(sys.modules)
import rmsnorm_lab
rmsnorm_lab.__version__
dir(rmsnorm_lab)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_import_is_light():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120,
                       cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    loaded = json.loads(p.stdout.strip().splitlines()[-1])
    assert "rmsnorm_lab" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"import rmsnorm_lab loaded {heavy}"
