"""Launch tables: which LaunchConfig our kernel uses for a shape on a GPU.

A table file (JSON) holds provenance fields (device, versions, date, how it was searched) and
``configs``: {"<hidden>:<tokens bucket>:<residual 0|1>": {named LaunchConfig fields that differ
from the defaults}}. ``tables/default.json`` was tuned on an H100; ``tables/<gpu slug>.json`` is a
GPU's own (e.g. ``nvidia-h200.json``). A table with ``"overlay": true`` (what ``tune --overlay`` writes
for your shapes) holds only some keys: lookups try it first, then the GPU's table. ``tune --install`` puts
an overlay in the user's tables folder (``user_dir()``), which every process on that GPU then reads.

A shape without a key of its own borrows the nearest entry (``nearest``, ``adapt``), else the heuristic.

A norm variant that runs the plain kernel with a different epilogue (the static-scale FP8 norm writes one
byte an element) may have a table of its own, ``tables/<gpu slug>.<variant>.json`` (same schema, searched
for that variant): its lookups try that table's own key and nearest entry, then the plain table.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from .config import LaunchConfig, as_config, next_pow2

TABLES_DIR = Path(__file__).with_name("tables")
DEFAULT_TABLE = TABLES_DIR / "default.json"


def tokens_bucket(tokens: int) -> int:
    """The power-of-two bucket a token count falls in (the table's key)."""
    return next_pow2(max(int(tokens), 1))


def table_key(hidden: int, tokens: int, residual: bool) -> str:
    return f"{int(hidden)}:{tokens_bucket(tokens)}:{int(bool(residual))}"


def parse_configs(raw: dict, where: str = "table") -> dict:
    """{key: LaunchConfig} from a table's ``configs`` (named fields); a bad entry is a ValueError naming it."""
    out = {}
    for k, v in raw.items():
        try:
            parts = [int(p) for p in k.split(":")]
            if len(parts) != 3 or parts[2] not in (0, 1):
                raise ValueError("key: expected '<hidden>:<tokens bucket>:<0|1>'")
            out[k] = as_config(v)
        except ValueError as e:
            raise ValueError(f"{where}: entry {k!r}: {e}") from None
    return out


MAX_PICKS = 65536      # picks remembered per process (a server sees many token counts)


class TableStore:
    """The tables read in this process (cached by path), the process-wide override (use_table), and what
    lookups made of them: the table each GPU reads and each shape's pick (cleared with the tables)."""

    def __init__(self):
        self._cache: dict = {}
        self._override: dict | None = None     # {"path", "configs", "meta"} set by use_table
        self.tables: dict = {}                 # gpu name -> {key: LaunchConfig} (load_table)
        self.picks: dict = {}                  # (hidden, tokens, itemsize, residual, gpu name) -> (config, source)

    def reset(self) -> None:
        self._cache.clear()
        self._override = None
        self.tables.clear()
        self.picks.clear()

    def read(self, path: Path) -> dict:
        """{"meta": provenance fields, "configs": {key: LaunchConfig}} of a file (missing: empty)."""
        path = Path(path)
        key = str(path)
        if key not in self._cache:
            try:
                meta = json.loads(path.read_text())
            except FileNotFoundError:
                meta = {}
            except ValueError as e:
                raise ValueError(f"table {path}: not valid JSON: {e}") from None
            configs = parse_configs(meta.get("configs", {}), f"table {path}")
            self._cache[key] = {"meta": {k: v for k, v in meta.items() if k != "configs"}, "configs": configs}
        return self._cache[key]

    def use(self, table) -> None:
        self.tables.clear()
        self.picks.clear()
        if table is None:
            self._override = None
        elif isinstance(table, dict):
            raw = table["configs"] if "configs" in table else table
            meta = {k: v for k, v in table.items() if k != "configs"} if "configs" in table else {}
            self._override = {"path": None, "meta": meta, "configs": parse_configs(raw, "use_table")}
        else:
            path = Path(table)
            if not path.is_file():
                raise ValueError(f"table: no such file: {path}")
            self._cache.pop(str(path), None)     # the file as it is now (tune may have rewritten it)
            got = self.read(path)
            self._override = {"path": path, **got}
        if table is None:
            self._cache.clear()      # the files are read again on next use

    @property
    def override(self):
        return self._override


STORE = TableStore()


def use_table(table) -> None:
    """Use ``table`` (a path, a dict of configs or a whole table dict, or None: back to the files) in this
    process for every GPU. A table marked ``"overlay": true`` is looked up first, then the GPU's own.
    The registry's cached plans are dropped, so the next calls launch with the new table's picks."""
    STORE.use(table)
    from .launch import LAUNCHER
    LAUNCHER.plans.clear()


def table_path(gpu_name: str | None = None, path=None) -> Path:
    """The file a GPU reads: ``path`` if given, else the GPU's own (tables/<slug of its name>.json, e.g.
    'NVIDIA H200' -> tables/nvidia-h200.json), else tables/default.json (also for CPU tensors: gpu_name None)."""
    if path is not None:
        return Path(path)
    if gpu_name:
        from ..device import slug
        own = TABLES_DIR / f"{slug(gpu_name)}.json"
        if own.is_file():
            return own
    return DEFAULT_TABLE


def user_dir() -> Path:
    """The user's tables folder: ``$XDG_CACHE_HOME/rmsnorm_lab/tables`` (``~/.cache/...`` without it)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "rmsnorm_lab" / "tables"


def user_overlay_path(gpu_name: str | None) -> Path | None:
    """The overlay ``tune --install`` wrote for this GPU (user_dir()/<slug>.json), if there is one."""
    if not gpu_name:
        return None
    from ..device import slug
    p = user_dir() / f"{slug(gpu_name)}.json"
    return p if p.is_file() else None


def load_table(gpu_name: str | None = None, path=None) -> dict:
    """{key: LaunchConfig} a GPU reads: the use_table override (merged over the GPU's own table when it is an
    overlay), else the file of table_path with the user's installed overlay for this GPU over it; a missing
    file is an empty table."""
    if path is not None:
        return STORE.read(table_path(gpu_name, path))["configs"]
    got = STORE.tables.get(gpu_name)
    if got is None:
        ov = STORE.override
        if ov is None:
            got = _with_user(gpu_name)
        elif ov["meta"].get("overlay"):
            got = {**_with_user(gpu_name), **ov["configs"]}
        else:
            got = ov["configs"]
        STORE.tables[gpu_name] = got
    return got


def _with_user(gpu_name) -> dict:
    base = STORE.read(table_path(gpu_name))["configs"]
    user = user_overlay_path(gpu_name)
    return {**base, **STORE.read(user)["configs"]} if user else base


def install_overlay(table_file, gpu_name: str) -> Path:
    """Put an overlay table (``tune --overlay``'s table.json) in the user's tables folder for ``gpu_name``,
    over the keys of an overlay installed there before; returns the file. Entries are checked first."""
    from ..device import slug
    from ..results import _atomic_write
    meta = json.loads(Path(table_file).read_text())
    if not meta.get("overlay"):
        raise ValueError(f"table: {table_file} is not an overlay (tune --overlay writes one)")
    parse_configs(meta.get("configs", {}), f"table {table_file}")
    dst = user_dir() / f"{slug(gpu_name)}.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_file():
        old = json.loads(dst.read_text())
        meta["configs"] = {**old.get("configs", {}), **meta.get("configs", {})}
        meta["searched"] = sorted(set(old.get("searched", [])) | set(meta.get("searched", [])))
    _atomic_write(dst, dump_table(meta))
    STORE.reset()
    from .launch import LAUNCHER
    LAUNCHER.plans.clear()
    return dst


def heuristic(hidden: int, tokens: int, itemsize: int, residual: bool) -> LaunchConfig:
    """The config for a shape no table holds: one row per program (several below 1024 columns, keeping two
    or more blocks per SM), ~16 bytes of each tensor per thread and load, up to 16 warps."""
    block_n = next_pow2(hidden)
    rows = 1
    if block_n <= 1024:
        rows = max(1, min(16, 2048 // block_n, next_pow2(max(1, tokens // 264))))
    elems = block_n * rows
    per_thread = max(1, 16 // itemsize) * 2
    warps = max(1, min(16, elems // (32 * per_thread)))
    warps = next_pow2(warps) if warps & (warps - 1) else warps
    return LaunchConfig(rows=rows, warps=warps)


def nearest(hidden: int, tokens: int, residual: bool, table: dict):
    """The table entry a shape without its own key borrows, as (key, LaunchConfig), or None.

    Candidates are the entries with the same residual whose block width (the next power of two of the
    hidden size) is the same as the shape's, or at most twice or half of it. Among them, the closest by
    ``3 * |log2(hidden ratio)| + |log2(tokens / bucket's middle)| + 3 * (block widths differ)``: the same block width
    compiles to the same code (registers, programs per SM, the masked tail's share), so it comes first; the
    hidden size decides the per-row work and so counts three times the token count, which decides the grid (waves
    over the SMs) and how much of the tensors stays in L2 between the two passes; a bucket stands for the
    token counts in it by its geometric middle (bucket / sqrt 2), as a tuned entry's token count lies there. None when no entry is
    within a factor of two of the block width: the heuristic is nearer the truth than a borrowed config."""
    block = next_pow2(hidden)
    best, best_cost = None, math.inf
    for key, cfg in table.items():
        h, b, r = (int(p) for p in key.split(":"))
        if r != int(bool(residual)):
            continue
        hb = next_pow2(h)
        if not (block // 2 <= hb <= block * 2):
            continue
        cost = (3 * abs(math.log2(h / hidden)) + abs(math.log2(b / math.sqrt(2) / max(int(tokens), 1)))
                + 3 * (hb != block))
        if cost < best_cost - 1e-9 or (abs(cost - best_cost) <= 1e-9 and key < best[0]):
            best, best_cost = (key, cfg), cost
    return best


def adapt(cfg: LaunchConfig, from_hidden: int, hidden: int) -> LaunchConfig:
    """A borrowed config made fit for another block width: warps scale with the block (the same elements
    per thread, 1..32 warps), a two-pass slice no wider than half the block, a register cap dropped (it was
    set for the other block's code)."""
    src, dst = next_pow2(from_hidden), next_pow2(hidden)
    if src == dst:
        return cfg
    warps = min(32, max(1, cfg.warps * dst // src))
    chunk = cfg.chunk if cfg.chunk and cfg.chunk <= dst // 2 else 0
    changes = dict(warps=warps, chunk=chunk, maxnreg=0)
    if cfg.chunk and not chunk:            # the slice no longer fits: keep two passes over the whole row
        changes.update(reread=not cfg.evict_last)
        if not changes["reread"]:
            changes["sum_first"] = False
    return cfg.replace(**changes)


VARIANT_TOKEN_REACH = 4    # a variant table's entry serves token buckets up to this factor from its own


def _near_tokens(table: dict, tokens: int) -> dict:
    """The entries of a variant table whose token bucket is within VARIANT_TOKEN_REACH of the shape's.

    A variant table is searched at a few token counts; its picks (two passes over column slices without a
    residual, for the static FP8 norm) win where the grid fills the GPU many times over. Far below that (a
    1024-token entry borrowed for a decode batch of 1-128 rows) they were measured slower than the plain
    table's own small-batch entries (H200, bf16, 2048-5120 x 1-128 tokens without a residual: 1.12x the
    fastest peer cold against 1.01x), so such shapes read the plain table. Nor does an entry serve token
    counts below the table's smallest searched one: the static FP8 table's 256-token entries are two-pass
    launches for several rows a program, and 1-128 tokens on the plain table's picks were measured at 1.02x
    the fastest peer cold and 0.93x in graph mode (H200, bf16, 2048-16384 columns)."""
    b = tokens_bucket(tokens)
    buckets = {int(k.split(":")[1]) for k in table}
    if not buckets or b < min(buckets):
        return {}

    def near(key: str) -> bool:
        kb = int(key.split(":")[1])
        return max(b, kb) <= VARIANT_TOKEN_REACH * min(b, kb)
    return {k: v for k, v in table.items() if near(k)}


def pick_explained(hidden: int, tokens: int, itemsize: int, residual: bool, gpu_name: str | None = None,
                   table: dict | None = None, variant: str | None = None) -> tuple:
    """(LaunchConfig, where it came from): the table's own entry for the shape's key ("table <key>"), else
    the nearest entry adapted to the shape ("nearest <key>", see ``nearest`` and ``adapt``), else the
    heuristic ("heuristic"). Without ``table``, the GPU's table and each shape's pick are remembered until the
    tables change (use_table, install_overlay): a launch's lookup is one dict access, no file is touched.
    ``variant`` (one of VARIANT_TABLES): the GPU's table for that variant first ("fp8-static table <key>",
    "fp8-static nearest <key>"), then as without it."""
    if table is None:
        memo = (hidden, tokens, itemsize, bool(residual), gpu_name, variant)
        got = STORE.picks.get(memo)
        if got is None:
            if len(STORE.picks) >= MAX_PICKS:
                STORE.picks.clear()
            got = None
            vpath = variant_table_path(gpu_name, variant) if variant else None
            if vpath is not None:
                vt = _near_tokens(STORE.read(vpath)["configs"], tokens)
                cfg, why = pick_explained(hidden, tokens, itemsize, residual, table=vt)
                got = (cfg, f"{variant} {why}") if why != "heuristic" else None
            if got is None:
                got = pick_explained(hidden, tokens, itemsize, residual, table=load_table(gpu_name))
            STORE.picks[memo] = got
        return got
    key = table_key(hidden, tokens, residual)
    cfg = table.get(key)
    if cfg is not None:
        return cfg, f"table {key}"
    near = nearest(hidden, tokens, residual, table)
    if near is not None:
        k, c = near
        return adapt(c, int(k.split(":")[0]), hidden), f"nearest {k}"
    return heuristic(hidden, tokens, itemsize, residual), "heuristic"


def pick(hidden: int, tokens: int, itemsize: int, residual: bool, gpu_name: str | None = None,
         table: dict | None = None, variant: str | None = None) -> LaunchConfig:
    """The launch config of a shape on a GPU (``pick_explained`` without the why)."""
    return pick_explained(hidden, tokens, itemsize, residual, gpu_name, table, variant)[0]


VARIANT_TABLES = ("fp8-static",)      # variants of the plain kernel that may have a table of their own


def variant_table_path(gpu_name: str | None, variant: str) -> Path | None:
    """The table this GPU reads for the variant: ``<gpu slug>.<variant>.json`` in the user's tables folder
    (``user_dir()``, where you put one searched on your GPU), else in the package's ``tables/``; None if
    neither has one."""
    if variant not in VARIANT_TABLES:
        raise ValueError(f"variant: expected one of {', '.join(VARIANT_TABLES)}, got {variant!r}")
    if not gpu_name:
        return None
    from ..device import slug
    for folder in (user_dir(), TABLES_DIR):
        p = folder / f"{slug(gpu_name)}.{variant}.json"
        if p.is_file():
            return p
    return None


def table_info(gpu_name: str | None = None) -> dict:
    """Which table runs on this GPU: path, sha256 (12 hex), the GPU it was tuned on, whether that is this GPU
    (own), and the overlay set with use_table if any."""
    ov = STORE.override
    if ov is not None and not ov["meta"].get("overlay"):
        info = _file_info(ov["path"], gpu_name) if ov["path"] else {
            "path": None, "sha256": _digest(json.dumps({k: v.to_dict(True) for k, v in ov["configs"].items()},
                                                       sort_keys=True).encode()),
            "tuned_on": ov["meta"].get("device"), "own": bool(gpu_name) and ov["meta"].get("device") == gpu_name}
        return {**info, "override": True}
    info = _file_info(table_path(gpu_name), gpu_name)
    for v in VARIANT_TABLES:
        vp = variant_table_path(gpu_name, v)
        if vp is not None:
            info.setdefault("variant_tables", {})[v] = _file_info(vp, gpu_name)
    user = user_overlay_path(gpu_name)
    if user is not None:
        info["user_overlay"] = _file_info(user, gpu_name)
    if ov is not None:
        info["overlay"] = _file_info(ov["path"], gpu_name) if ov["path"] else {"path": None,
                                                                               "keys": sorted(ov["configs"])}
    return info


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _file_info(path: Path, gpu_name) -> dict:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return {"path": str(path), "sha256": None, "error": str(e)}
    try:
        tuned_on = json.loads(data).get("device")
    except ValueError:
        tuned_on = None
    return {"path": str(path), "sha256": _digest(data), "tuned_on": tuned_on,
            "own": bool(gpu_name) and tuned_on == gpu_name}


def dump_table(meta: dict) -> str:
    """A table as JSON text: provenance fields, then ``configs`` one entry a line (LaunchConfigs or dicts)."""
    head = {k: v for k, v in meta.items() if k != "configs"}
    configs = {k: (v.to_dict(compact=True) if isinstance(v, LaunchConfig) else as_config(v).to_dict(compact=True))
               for k, v in meta.get("configs", {}).items()}
    body = json.dumps(head, indent=1)[:-2] + ",\n" if head else "{\n"
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in configs.items()]
    return body + ' "configs": {' + ("\n" + ",\n".join(lines) + "\n " if lines else "") + "}\n}\n"
