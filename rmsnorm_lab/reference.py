"""The float64 reference every implementation is checked against."""
from __future__ import annotations


def reference(x, weight, residual=None, eps: float = 1e-6):
    """RMSNorm in float64 on the inputs' device.

    Returns ``out`` or ``(out, new_residual)``; ``new_residual = x + residual`` is
    the exact sum, and the sum (not its rounding) is normalized, as HuggingFace does.
    NaN / Inf in a row propagate to that row's output, as they do in every
    implementation that computes the mean square of the row.
    """
    import torch

    x64 = x.to(torch.float64)
    if residual is not None:
        x64 = x64 + residual.to(torch.float64)
    rstd = torch.rsqrt(x64.pow(2).mean(dim=-1, keepdim=True) + eps)
    out = x64 * rstd * weight.to(torch.float64)
    return (out, x64) if residual is not None else out


def rel_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64 (NaN where out has NaN the reference lacks)."""
    import torch

    o = out.to(torch.float64)
    r = ref.to(torch.float64)
    if o.shape != r.shape:
        raise ValueError(f"output shape {tuple(o.shape)} differs from reference {tuple(r.shape)}")
    finite = torch.isfinite(r)
    if not bool(torch.equal(torch.isfinite(o), finite)):
        return float("nan")
    if not bool(finite.all()):
        # non-finite values must match the reference's (NaN where NaN, +-Inf where +-Inf)
        nf = ~finite
        same = (torch.isnan(o[nf]) & torch.isnan(r[nf])) | (o[nf] == r[nf])
        if not bool(same.all()):
            return float("nan")
        o, r = o[finite], r[finite]
    denom = torch.linalg.vector_norm(r)
    num = torch.linalg.vector_norm(o - r)
    if float(denom) == 0.0:
        return float(num)
    return float(num / denom)


# ||out - ref|| / ||ref|| a correct implementation stays under, per dtype. bf16/fp16
# admit double rounding (HF/vLLM round x*rstd before the weight) and the Triton
# interpreter's truncating fp32->bf16 cast (see shared/notes/triton-on-cpu.md).
TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.2e-2, "float64": 1e-12}


def compare(x, weight, residual, eps, out, new_residual=None, chunk_rows: int = 4096):
    """(err_out, err_residual) of outputs against the float64 reference, computed in row
    chunks so that large cases never hold a float64 copy of the whole tensor."""
    import torch

    n = x.shape[-1]
    x2, o2 = x.reshape(-1, n), out.reshape(-1, n)
    r2 = residual.reshape(-1, n) if residual is not None else None
    nr2 = new_residual.reshape(-1, n) if new_residual is not None else None
    acc = {"o": [0.0, 0.0], "r": [0.0, 0.0]}
    nan = {"o": False, "r": False}
    for i in range(0, x2.shape[0], chunk_rows):
        sl = slice(i, i + chunk_rows)
        ref = reference(x2[sl], weight, None if r2 is None else r2[sl], eps)
        pairs = [("o", o2[sl], ref if r2 is None else ref[0])]
        if r2 is not None and nr2 is not None:
            pairs.append(("r", nr2[sl], ref[1]))
        for k, got, want in pairs:
            e = rel_error(got, want)
            if e != e:   # NaN
                nan[k] = True
                continue
            w64 = want.to(torch.float64)
            fin = torch.isfinite(w64)
            w64 = w64[fin]
            g64 = got.to(torch.float64)[fin]
            acc[k][0] += float(torch.sum((g64 - w64) ** 2))
            acc[k][1] += float(torch.sum(w64 ** 2))

    def fin(k):
        if nan[k]:
            return float("nan")
        num, den = acc[k][0] ** 0.5, acc[k][1] ** 0.5
        return num / den if den else num
    return fin("o"), (fin("r") if (r2 is not None and nr2 is not None) else float("nan"))
