"""How many digits grid stencils lose in fp32, bf16 and fp16: the measurement behind assembling
data-free residuals in fp32 (fp64 for fp64) whatever the network's precision.

    python scripts/bench_stencil_precision.py                       # 32, 64, 128, 256 nodes a side
    python scripts/bench_stencil_precision.py --sizes 64 256 --out outputs/stencil_precision.json

A stencil second derivative divides differences of size O(h^2 u) by h^2, so a field carrying a
relative rounding error eps comes out with an error of about 4 eps |u| / h^2 against a Laplacian
of size |lap u|: the relative error grows like eps / h^2. For each grid size and dtype the script
rounds smooth fields on the unit square's nodes to that dtype and applies the stencils of
`mpsciml.derivatives.stencils`:

  * d/dx        first derivative (central, one-sided at the walls) of u = sin(pi x) sin(pi y);
  * laplacian   5-point Laplacian of the same u (interior nodes);
  * flux        div(nu grad u), nu = exp(0.5 sin(2x + y)), harmonic faces (poisson_grid's residual);
  * energy_grad the gradient w.r.t. the nodal u of the Q1 Ritz energy int 1/2 nu |grad u|^2
                (poisson_grid's default loss): the stiffness matrix times u, again a second
                difference, so the energy loss is no escape from the problem.

Two ways for a half dtype: `all` (field and stencil arithmetic in the dtype) and `field` (the
field rounded to the dtype, as a network's half output is, the stencil in fp32: what our residual
assembly does). Each entry is the relative L2 error against the same stencil on the fp64 field,
i.e. the precision lost; the fp64 row gives the discretisation error against the exact operator
for scale. Non-finite results (fp16 overflows: 4 / h^2 > 65504 at 256 nodes) show as `overflow`.
Prints a markdown table and writes the JSON record (with the machine) to --out, and beside it a
log-log picture of the errors against the grid size (`<out>.png`, with the 1/h^2 guide).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpsciml.benchmark.report import machine, write_json
from mpsciml.derivatives.stencils import first_derivative, flux_divergence, laplacian, q1_energy

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
OPERATORS = ("d/dx", "laplacian", "flux", "energy_grad")


def fields(n: int) -> dict[str, Tensor]:
    """u, nu and the exact d/dx, Laplacian and div(nu grad u) on n x n nodes, fp64 (1, 1, n, n)."""
    x = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    gx, gy = (g[None, None] for g in torch.meshgrid(x, x, indexing="ij"))
    pi = math.pi
    u = torch.sin(pi * gx) * torch.sin(pi * gy)
    ux, uy = (
        pi * torch.cos(pi * gx) * torch.sin(pi * gy),
        pi * torch.sin(pi * gx) * torch.cos(pi * gy),
    )
    g = 0.5 * torch.sin(2 * gx + gy)
    nu = torch.exp(g)
    lap = -2 * pi**2 * u
    flux = nu * (torch.cos(2 * gx + gy) * ux + 0.5 * torch.cos(2 * gx + gy) * uy + lap)
    return {"u": u, "nu": nu, "d/dx": ux, "laplacian": lap, "flux": flux}


def apply(name: str, u: Tensor, nu: Tensor, h: float, dtype: torch.dtype) -> Tensor:
    """Operator `name` of u in `dtype` arithmetic, on the nodes where it is compared."""
    if name == "d/dx":
        return first_derivative(u, h, 0, dtype=dtype)
    if name == "laplacian":
        return laplacian(u, (h, h), dtype=dtype)
    if name == "flux":
        return flux_divergence(u, nu, (h, h), dtype=dtype)[..., 1:-1, 1:-1]
    field = u.to(dtype).detach().requires_grad_(True)
    q1_energy(field, nu.to(dtype), (h, h), dtype=dtype).sum().backward()
    return field.grad[..., 1:-1, 1:-1] / (h * h)  # per unit area: a -div(nu grad u) at the nodes


def relative(value: Tensor, reference: Tensor) -> float | None:
    error = float((value.double() - reference).norm() / reference.norm())
    return error if math.isfinite(error) else None


def measure(sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        f, h = fields(n), 1.0 / (n - 1)
        exact = {
            "d/dx": f["d/dx"],
            "laplacian": f["laplacian"][..., 1:-1, 1:-1],
            "flux": f["flux"][..., 1:-1, 1:-1],
        }
        reference = {op: apply(op, f["u"], f["nu"], h, torch.float64) for op in OPERATORS}
        rows.append(
            {
                "size": n,
                "dtype": "fp64",
                "assembly": "discretisation (fp64 vs exact)",
                **{
                    op: relative(reference[op], exact[op]) if op in exact else None
                    for op in OPERATORS
                },
            }
        )
        for name, dtype in DTYPES.items():
            if name == "fp64":
                continue
            modes = (
                {"all": dtype} if dtype == torch.float32 else {"all": dtype, "field": torch.float32}
            )
            for mode, arithmetic in modes.items():
                u, nu = f["u"].to(dtype), f["nu"].to(dtype)
                errors = {
                    op: relative(apply(op, u, nu, h, arithmetic), reference[op]) for op in OPERATORS
                }
                label = f"{name} in {name}" if mode == "all" else f"{name} field, fp32 stencil"
                rows.append({"size": n, "dtype": name, "assembly": label, **errors})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def cell(value: float | None) -> str:
        return "overflow" if value is None else f"{value:.1e}"

    lines = [
        "| nodes | assembly | " + " | ".join(OPERATORS) + " |",
        "|---|---|" + "---|" * len(OPERATORS),
    ]
    for row in rows:
        values = []
        for op in OPERATORS:
            missing = row["dtype"] == "fp64" and row[op] is None
            values.append("-" if missing else cell(row[op]))
        lines.append(f"| {row['size']}^2 | {row['assembly']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Relative error against nodes per side, log-log, one panel per operator and a line per
    assembly, with a 1/h^2 guide (1/h for d/dx): the eps / h^2 growth is a straight line one
    reads at a glance, and where a half format crosses 1 (an error as large as the operator)
    shows too.
    Colour: the dtype; solid: all arithmetic in it; dashed: its field, the stencil in fp32.
    None with fewer than two sizes (a point per line says nothing the table does not)."""
    sizes = sorted({r["size"] for r in rows})
    if len(sizes) < 2:
        return None
    import matplotlib.pyplot as plt

    from mpsciml.plots import save_figure  # its import selects Agg (before any figure)

    fig, axes = plt.subplots(1, len(OPERATORS), figsize=(4.2 * len(OPERATORS), 4.2),
                             sharey=True, constrained_layout=True)  # fmt: skip
    assemblies = list(dict.fromkeys(r["assembly"] for r in rows))
    colours = {name: f"C{index}" for index, name in enumerate(("fp64", "fp32", "bf16", "fp16"))}
    for ax, op in zip(axes, OPERATORS, strict=True):
        for assembly in assemblies:
            chosen = [r for r in rows if r["assembly"] == assembly]
            points = [(r["size"], r[op]) for r in chosen if r[op] is not None and r[op] > 0]
            if not points:
                continue
            # the two half assemblies often coincide: dashed and crosses keep both visible
            style = ("-", "o") if " in " in assembly else ("--", "x")
            style = (":", "s") if "discretisation" in assembly else style
            ax.loglog(*zip(*points, strict=True), style[0], marker=style[1], ms=4,
                      color=colours[chosen[0]["dtype"]], label=assembly)  # fmt: skip
        order = 1 if op == "d/dx" else 2  # eps / h for a first difference, eps / h^2 else
        guide = [1e-3 * (n / sizes[0]) ** order for n in sizes]
        ax.loglog(sizes, guide, "-.", color="0.6", label="~ 1/h (d/dx), ~ 1/h^2 (others)")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set(title=op, xlabel="nodes per side")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("relative L2 error vs the fp64 stencil")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=4)
    fig.suptitle("Grid stencils in low precision: precision lost (fp64 rows: discretisation)")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "stencil_precision.json")
    args = parser.parse_args(argv)
    if min(args.sizes) < 5:
        parser.error(f"--sizes {args.sizes}: every size must be >= 5")
    start = time.perf_counter()
    rows = measure(args.sizes)
    record = {
        "what": "relative L2 error of grid stencils vs the same stencil in fp64 (precision loss); "
        "fp64 rows: discretisation error vs the exact operator",
        "fields": "u = sin(pi x) sin(pi y), nu = exp(0.5 sin(2x + y)) on n x n nodes of [0, 1]^2",
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "machine": machine(),
    }
    print(markdown(rows))
    path = write_json(args.out, record)
    picture = plot(rows, path.with_suffix(".png"))
    print(f"wrote {path}" + (f", {picture}" if picture else ""))


if __name__ == "__main__":
    main()
