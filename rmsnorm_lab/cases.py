"""The one case type (the sweep's points and the support matrix's inputs), presets and seeded inputs."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .validate import check_int_list, dtype_name, suggest

PRESET_DIR = Path(__file__).parent / "presets"

# The seed's grid (vLLM benchmark_rmsnorm.py): head_num 32/48 x head_dim 128,
# batch 1/4/16/64, seq 64..1024.
SEED_HIDDEN = [4096, 6144]
SEED_BATCH = [1, 4, 16, 64]
SEED_SEQ = [64, 128, 256, 512, 1024]


LAYOUTS = ("contiguous", "strided_rows", "transposed")
MISALIGNABLE = ("", "x", "residual", "weight")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class Case:
    """One input case: tokens = batch * seq rows of ``hidden`` values.

    The first five fields are the sweep's grid. The others (defaults: the sweep's inputs) describe
    the inputs the support matrix probes:

    - ``name``: a label (default: built from the fields, ``label``)
    - ``ndim``: 3 for x of (batch, seq, hidden), 2 for (batch * seq, hidden)
    - ``layout``: ``contiguous``; ``strided_rows`` (each row a slice of a wider buffer);
      ``transposed`` (a transposed view: the hidden dim is not unit-stride). The residual shares it.
    - ``residual_is_x``: the residual argument is x itself (``residual`` must be true)
    - ``weight_dtype`` / ``residual_dtype``: "" for x's dtype
    - ``misaligned``: "x", "residual" or "weight": that tensor is a view ``buf[1:]`` whose data
      starts one element (2 bytes in 16-bit dtypes) off 16-byte alignment
    - ``weight_broadcast``: the weight is one value expanded to ``hidden`` (stride 0)
    - ``weight_device``: "" (x's device) or a device kind the weight lives on instead ("cpu")
    - ``eps``: overrides the run's eps for this case (None: the run's)
    - ``zero_row``: the first row of x (and of the residual) is all zeros
    - ``large``: inputs are generated on the device (more than 2**31 elements); checked on sampled rows
    """
    batch: int
    seq: int
    hidden: int
    dtype: str = "bfloat16"
    residual: bool = False
    name: str = ""
    ndim: int = 3
    layout: str = "contiguous"
    residual_is_x: bool = False
    weight_dtype: str = ""
    residual_dtype: str = ""
    misaligned: str = ""
    weight_broadcast: bool = False
    weight_device: str = ""
    eps: float | None = None
    zero_row: bool = False
    large: bool = False

    def __post_init__(self):
        for f in ("batch", "seq", "hidden", "ndim"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"case: {f}: expected a positive integer, got {v!r}")
        if self.ndim not in (2, 3):
            raise ValueError(f"case: ndim: expected 2 or 3, got {self.ndim!r}")
        for f in ("dtype", "weight_dtype", "residual_dtype"):
            v = getattr(self, f)
            if (v or f == "dtype") and v not in ITEMSIZE:
                raise ValueError(f"case: {f}: expected one of {', '.join(ITEMSIZE)}, got {v!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"case: layout: expected one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.misaligned not in MISALIGNABLE:
            raise ValueError(f"case: misaligned: expected one of x, residual, weight, got {self.misaligned!r}")
        if (self.residual_is_x or self.residual_dtype or self.misaligned == "residual") and not self.residual:
            raise ValueError("case: residual_is_x / residual_dtype / misaligned='residual' need residual=True")
        if self.residual_is_x and (self.residual_dtype or self.misaligned):
            raise ValueError("case: residual_is_x: the residual is x, it has x's dtype and layout")
        if self.weight_device not in ("", "cpu", "cuda"):
            raise ValueError(f"case: weight_device: expected '', 'cpu' or 'cuda', got {self.weight_device!r}")
        if self.eps is not None and (isinstance(self.eps, bool) or not isinstance(self.eps, (int, float))
                                     or not self.eps >= 0):
            raise ValueError(f"case: eps: expected None or a number >= 0, got {self.eps!r}")

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def bytes_moved(self) -> int:
        return bytes_moved(self.tokens, self.hidden, self.itemsize, self.residual)

    @property
    def shape(self) -> tuple:
        return (self.batch, self.seq, self.hidden) if self.ndim == 3 else (self.tokens, self.hidden)

    @property
    def numel(self) -> int:
        return self.tokens * self.hidden

    @property
    def w_dtype(self) -> str:
        return self.weight_dtype or self.dtype

    @property
    def r_dtype(self) -> str:
        return self.residual_dtype or self.dtype

    @property
    def label(self) -> str:
        """The name, or ``describe()``."""
        return self.name or self.describe()

    def describe(self) -> str:
        """Shape, dtype and every field that differs from the sweep's inputs, in words."""
        parts = ["x".join(map(str, self.shape)), self.dtype]
        if self.residual:
            parts.append("+res" + ("=x" if self.residual_is_x else ""))
        for f in fields(self)[6:]:
            v = getattr(self, f.name)
            if f.name not in ("ndim", "residual_is_x") and v != f.default:
                parts.append(f"{f.name}={v}")
        return " ".join(parts)

    def key(self) -> tuple:
        base = (self.dtype, self.hidden, self.batch, self.seq, self.residual)
        extra = tuple((f.name, getattr(self, f.name)) for f in fields(self)[5:]
                      if getattr(self, f.name) != f.default)
        return base + extra if extra else base

    def as_dict(self) -> dict:
        """The sweep's fields and the token count (the columns of a results row)."""
        return {"batch": self.batch, "seq": self.seq, "hidden": self.hidden, "dtype": self.dtype,
                "residual": self.residual, "tokens": self.tokens}

    def to_dict(self) -> dict:
        """Every field (JSON-friendly); ``Case.from_dict(c.to_dict()) == c``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        """A case from a dict of its fields (unknown fields are an error naming them)."""
        if not isinstance(d, dict):
            raise TypeError(f"case: expected a Case or a dict of its fields, got {d!r}")
        known = [f.name for f in fields(cls)]
        for k in d:
            if k not in known:
                raise TypeError(f"case: unknown case field {k!r}; expected {', '.join(known)}{suggest(k, known)}")
        d = dict(d)
        if "dtype" in d:
            d["dtype"] = dtype_name(d["dtype"])
        for k in ("weight_dtype", "residual_dtype"):
            if d.get(k):
                d[k] = dtype_name(d[k])
        missing = [k for k in ("batch", "seq", "hidden") if k not in d]
        if missing:
            raise TypeError(f"case: missing field(s) {', '.join(missing)}")
        return cls(**d)


def bytes_moved(tokens: int, hidden: int, itemsize: int, residual: bool) -> int:
    """Fewest bytes a kernel must move: read x (and r), write out (and new r), read weight."""
    per_row = (4 if residual else 2) * hidden * itemsize
    return tokens * per_row + hidden * itemsize


def make_cases(hidden, batch, seq, dtypes=("bfloat16",), residual=(False, True)) -> list[Case]:
    """The cartesian grid, in the order the sweep measures it."""
    hidden = check_int_list("hidden_size", hidden)
    batch = check_int_list("batch_size", batch)
    seq = check_int_list("seq_len", seq)
    if isinstance(dtypes, str):
        dtypes = [dtypes]
    dtypes = [dtype_name(d) for d in dtypes]
    if isinstance(residual, bool):
        residual = [residual]
    return [Case(b, s, h, d, bool(r)) for d, r, h, b, s in
            itertools.product(dtypes, residual, hidden, batch, seq)]


def tokens_to_batch_seq(tokens: int) -> tuple[int, int]:
    """Express a token count as (batch, seq) the way the seed's grid does."""
    for seq in (1024, 512, 256, 128, 64):
        if tokens % seq == 0 and tokens >= seq:
            return tokens // seq, seq
    return 1, tokens


def skip_reason(case: Case, device: str) -> str:
    """Why this case cannot run on ``device`` at all, whatever the implementation ("" when it can)."""
    dev = str(device).split(":")[0]
    if case.large and dev != "cuda":
        gib = case.numel * case.itemsize / 2**30
        return (f"needs CUDA: {case.numel:,} elements (> 2**31, {gib:.0f} GiB per tensor) "
                f"are probed on a GPU only")
    if case.weight_device and case.weight_device == dev:
        return f"needs x on another device than the weight ({case.weight_device}): a CUDA run"
    return ""


def _place(vals, case: Case, dtype, device, misaligned: bool):
    """Put float32 values into a tensor of ``dtype`` on ``device`` laid out as the case says."""
    import torch

    shape, n = vals.shape, vals.shape[-1]
    if misaligned:
        buf = torch.empty(vals.numel() + 1, dtype=dtype, device=device)
        t = buf[1:].view(shape)
        t.copy_(vals)
        return t
    if case.layout == "strided_rows":
        buf = torch.zeros(shape[:-1] + (n + 64,), dtype=dtype, device=device)
        t = buf[..., :n]
        t.copy_(vals)
        return t
    if case.layout == "transposed":
        order = tuple(reversed(range(vals.dim())))
        return vals.permute(*order).contiguous().to(device=device, dtype=dtype).permute(*order)
    return vals.to(device=device, dtype=dtype)


def make_inputs(case: Case, device="cpu", seed: int = 0):
    """(x, weight, residual) as the case says: random x, random weight (never ones), the residual if
    the case has one (x itself when ``residual_is_x``). The sweep's cases get contiguous inputs.
    The values are drawn on the CPU (the same ones for the same seed on every machine), on CUDA by
    a CUDA generator seeded with ``seed`` (other values than the CPU's, no host copy)."""
    import torch

    dt = getattr(torch, case.dtype)
    shape, n = case.shape, case.hidden
    if case.large:
        gd = torch.Generator(device=device).manual_seed(seed)
        x = torch.empty(shape, dtype=dt, device=device).normal_(generator=gd)
        r = None
        if case.residual:
            r = x if case.residual_is_x else torch.empty(shape, dtype=getattr(torch, case.r_dtype),
                                                         device=device).normal_(generator=gd)
        g = torch.Generator(device="cpu").manual_seed(seed)
        w = (1.0 + 0.5 * torch.randn(n, generator=g, dtype=torch.float32)).to(
            device=device, dtype=getattr(torch, case.w_dtype))
        return x, w, r
    gdev = device if str(device).startswith("cuda") else "cpu"
    g = torch.Generator(device=gdev).manual_seed(seed)
    xv = torch.randn(shape, generator=g, dtype=torch.float32, device=gdev)
    wv = 1.0 + 0.5 * torch.randn(n, generator=g, dtype=torch.float32, device=gdev)
    rv = torch.randn(shape, generator=g, dtype=torch.float32, device=gdev) \
        if case.residual and not case.residual_is_x else None
    if case.zero_row:
        xv.view(-1, n)[0] = 0
        if rv is not None:
            rv.view(-1, n)[0] = 0
    x = _place(xv, case, dt, device, case.misaligned == "x")
    r = None
    if case.residual:
        r = x if case.residual_is_x else _place(rv, case, getattr(torch, case.r_dtype), device,
                                                 case.misaligned == "residual")
    wdt, wdev = getattr(torch, case.w_dtype), case.weight_device or device
    if case.weight_broadcast:
        w = wv[:1].to(device=wdev, dtype=wdt).expand(n)
    elif case.misaligned == "weight":
        buf = torch.empty(n + 1, dtype=wdt, device=wdev)
        w = buf[1:]
        w.copy_(wv)
    else:
        w = wv.to(device=wdev, dtype=wdt)
    return x, w, r


def load_preset(name_or_path) -> dict:
    """Parameters of a named preset (presets/NAME.yaml) or of a YAML file."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = PRESET_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        names = sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"preset: {name_or_path!r} not found; known presets: {', '.join(names)}")
    return yaml.safe_load(p.read_text()) or {}
