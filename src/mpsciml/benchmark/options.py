"""The command line of `scripts/benchmark.py`: its options, their defaults and their checks.

Kept apart from the script so the script holds what a run does, and light to import (argparse,
the precision names, the settings' names): a typo is answered before Lightning is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from mpsciml.benchmark.settings import DEEPXDE_SETTING, SETTING_NAMES, with_setting
from mpsciml.precision.registry import PRECISIONS

DEFAULT_PRECISIONS = ["fp32", "mixed", "bf16_mixed"]
COMPILE_WARMUP = 3  # at least, with --compile: the compiling steps are never timed
SIZE_KEYS = ("points", "width")


class UsageError(Exception):
    """A bad option; its message is the one line the user sees."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """`scripts/benchmark.py`'s options (`description`: its --help text), checked; a bad one
    raises `UsageError` with the one line the user sees."""
    parser = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", nargs="+", default=None, metavar="NAME")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="add DeepXDE and PINA (when installed), fp32 as shipped and bare_compiled",
    )
    parser.add_argument("--compile", action="store_true", help="add our fp32 row with compile=true")
    parser.add_argument(
        "--laplacian-apart",
        action="store_true",
        help="add our fp32 row with taylor_laplacian=apart: a Laplacian's terms as streams of "
        "their own (the Taylor step before the summed stream)",
    )
    parser.add_argument(
        "--python-wrapper",
        action="store_true",
        help="with --compile: add our compile=true row with compile_cpp_wrapper=false "
        "(inductor's Python wrapper), to measure what the C++ wrapper saves",
    )
    parser.add_argument(
        "--full-guards",
        action="store_true",
        help="with --compile: add our compile=true row with compile_guards=full (every dynamo "
        "guard checked), to measure what the lean guards save",
    )
    parser.add_argument(
        "--deepxde-setting",
        action="store_true",
        help="DeepXDE's Burgers example: 2540/80/160 points, MLP 2-[20]x3-1 tanh",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(SETTING_NAMES),
        metavar="NAME",
        help=f"rows for a spectral model (model=fno): {', '.join(SETTING_NAMES)}",
    )
    parser.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with model=fno also neuraloperator's FNO at the same size (model=neuralop_fno)",
    )
    parser.add_argument(
        "--contraction",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with a spectral model also the CP contraction orders at its size",
    )
    parser.add_argument("--sizes", nargs="+", default=[], metavar="KEY=N,N")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per row, after the warm-up"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed steps first (per row; at least {COMPILE_WARMUP} with --compile)",
    )
    parser.add_argument("--turn", type=int, default=None, help="steps per turn of a row")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--matmul-share",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the timed steps, profile the bare rows: matmuls' share of a step and rate",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_intermixed_args(argv)
    if args.precisions is None:  # the comparison with peers and compiled rows is in fp32
        args.precisions = ["fp32"] if args.peers or args.compile else list(DEFAULT_PRECISIONS)
    if args.python_wrapper and not args.compile:
        raise UsageError("--python-wrapper compares two compile=true rows: add --compile")
    if args.full_guards and not args.compile:
        raise UsageError("--full-guards compares two compile=true rows: add --compile")
    if args.deepxde_setting:
        named = [o.split("=", 1)[1] for o in args.overrides if o.startswith("problem=")]
        if named and named[-1] != "burgers":
            raise UsageError(f"--deepxde-setting is Burgers' setting; got problem={named[-1]}")
        args.overrides = with_setting(args.overrides, DEEPXDE_SETTING)
    unknown = [p for p in args.precisions if p not in PRECISIONS]
    if unknown:
        raise UsageError(
            f"--precisions {unknown[0]!r} is unknown; allowed: {', '.join(PRECISIONS)}"
        )
    for key in ("steps", "turn", "threads"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UsageError(f"--{key}={value} is invalid: must be an integer >= 1")
    if args.warmup is not None and args.warmup < 0:
        raise UsageError(f"--warmup={args.warmup} is invalid: must be an integer >= 0")
    unknown = [n for n in args.settings if n not in SETTING_NAMES]
    if unknown:
        raise UsageError(
            f"--settings {unknown[0]!r} is unknown; allowed: {', '.join(SETTING_NAMES)}"
        )
    args.sizes = parse_sizes(args.sizes)
    if "fp32" not in args.precisions:
        args.precisions = ["fp32", *args.precisions]  # every ratio is taken against fp32
    if "fp32" not in args.settings:
        args.settings = ["fp32", *args.settings]
    return args


def parse_sizes(items: list[str]) -> dict[str, list[int]]:
    """`points=1000,4000 width=32` -> {'points': [1000, 4000], 'width': [32]}."""
    sizes: dict[str, list[int]] = {}
    for item in items:
        key, _, values = item.partition("=")
        if key not in SIZE_KEYS:
            raise UsageError(f"--sizes {key!r} is unknown; allowed: {', '.join(SIZE_KEYS)}")
        try:
            numbers = [int(v) for v in values.split(",")]
        except ValueError:
            numbers = []
        if not numbers or min(numbers) < 1:
            raise UsageError(f"--sizes {key}={values!r} is invalid: comma-separated integers >= 1")
        sizes[key] = numbers
    return sizes
