"""The rows of a benchmark: which settings run side by side, as Hydra overrides.

For a network without spectral layers a row is a precision (`precision=<name>`). For a spectral
model (`model=fno`, `model=neuralop_fno`: its config has `spectral_precision`) the rows are the
settings of Tu et al.'s table, where the run's precision and the spectral layers' own compose:

    fp32            precision=fp32,  spectral full                 the baseline
    amp             precision=mixed, spectral full                 AMP only
    half_spectral   precision=fp32,  spectral half                 half spectral only
    amp_half_tanh   precision=mixed, spectral half, tanh           the recipe

and the same four for neuraloperator's FNO at the same size (`neuralop_` + name), which on a CPU
can run only those with a full spectral path: the others are listed as not run, with the reason
its `check_device` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

#: the model keys that make two FNOs the same size (copied from model=fno to neuralop_fno)
SIZE_KEYS = (
    "hidden_channels",
    "n_modes",
    "n_layers",
    "activation",
    "factorization",
    "rank",
    "positional_embedding",
    "lifting_channels",
    "projection_channels",
)
REFERENCE_MODEL = "neuralop_fno"
#: DeepXDE's Burgers example setting (`--deepxde-setting`), the setting of issue 15's comparison:
#: 2540 domain, 80 boundary, 160 initial points, MLP 2-[20]x3-1 tanh with Glorot-normal weights
#: (Adam 1e-3 is every benchmark row's optimizer already)
DEEPXDE_SETTING = (
    "problem=burgers",
    "problem.n_domain=2540",
    "problem.n_boundary=80",
    "problem.n_initial=160",
    "model.hidden=[20,20,20]",
    "model.activation=tanh",
    "model.init=glorot_normal",
)


@dataclass(frozen=True)
class Setting:
    """One row: its name in tables and JSON, what it is, and its overrides."""

    name: str
    label: str
    overrides: tuple[str, ...]
    #: the Lightning run with a training step that does nothing but count the step: what the
    #: loop around a step costs by itself (`runner.idle_training_step`)
    idle: bool = False


FNO_SETTINGS = (
    Setting("fp32", "fp32", ("precision=fp32", "model.spectral_precision=full")),
    Setting("amp", "AMP only", ("precision=mixed", "model.spectral_precision=full")),
    Setting(
        "half_spectral", "half spectral only", ("precision=fp32", "model.spectral_precision=half")
    ),
    Setting(
        "amp_half_tanh",
        "AMP + half spectral + tanh",
        ("precision=mixed", "model.spectral_precision=half", "model.stabilizer=tanh"),
    ),
)
SETTING_NAMES = tuple(s.name for s in FNO_SETTINGS)


def is_spectral(cfg: DictConfig) -> bool:
    """A model with a spectral precision of its own (its config says `spectral_precision`)."""
    return "spectral_precision" in cfg.model


def model_choice(overrides: list[str]) -> str | None:
    """The `model=` option on the command line, if any."""
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    return named[-1] if named else None


def precision_settings(precisions: list[str]) -> list[Setting]:
    return [Setting(p, p, (f"precision={p}",)) for p in precisions]


def spectral_settings(
    base: DictConfig, overrides: list[str], names: list[str], reference: bool
) -> list[Setting]:
    """The FNO rows named in `names`, then (with `reference`, and unless the model already is
    neuraloperator's) the same rows for `model=neuralop_fno` with the sizes of `base`'s model."""
    chosen = [s for s in FNO_SETTINGS if s.name in names]
    if not reference or model_choice(overrides) == REFERENCE_MODEL:
        return chosen
    sizes = tuple(
        f"model.{key}={_override_value(base.model[key])}" for key in SIZE_KEYS if key in base.model
    )
    same_size = [
        Setting(
            f"neuralop_{s.name}",
            f"neuraloperator: {s.label}",
            (f"model={REFERENCE_MODEL}", *sizes, *s.overrides),
        )
        for s in chosen
    ]
    return chosen + same_size


def _override_value(value: object) -> str:
    """A config value as Hydra override text: null, lists as [a,b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return "[" + ",".join(_override_value(v) for v in value) + "]"  # type: ignore[union-attr]
    return str(value)


def with_setting(overrides: list[str], setting: tuple[str, ...]) -> list[str]:
    """`setting` first, then the user's overrides; a key the user sets wins (dropped here)."""
    mine = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    return [*(o for o in setting if o.split("=", 1)[0] not in mine), *overrides]
