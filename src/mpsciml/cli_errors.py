"""What a user sees when the command line or the config is wrong: one `error:` line, exit 2.

Two kinds of mistakes reach `train.py`. Hydra's own (an unknown group option, a misspelt key, an
override it cannot parse) happen while it composes the config, before our code runs; Hydra
prints them in several lines and exits 1. Ours (`ConfigError`, from `validate()` or a
constructor) happen inside the run, after Hydra has made the run folder. Both end the same way
here, and a folder that holds nothing but what a refused config leaves is removed, so that
`report.py outputs/` does not count a typo as a failed run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

EXIT_CONFIG_ERROR = 2  # argparse's code for a usage error, and what the README promises


def stop_with_error(message: str) -> None:
    """Print `error: <message>` as the one line on stderr and exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)


def hydra_error_line(exc: CompactHydraException) -> str:
    """Hydra's message on one line, naming the option or key and what is allowed."""
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        if group:
            allowed = ", ".join(sorted(exc.options))
            return f"{group}={option} is invalid: no such option; allowed: {allowed}"
    # Hydra's lines, without the caret line that points into the override
    lines = [line.strip() for line in str(exc).splitlines()]
    text = " ".join(line for line in lines if line and set(line) != {"^"})
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    if isinstance(exc, OverrideParseException):  # Hydra's message quotes the position only
        text = f"cannot parse the override {exc.override!r}: {text}"
    return text


@contextmanager
def hydra_errors_in_one_line() -> Iterator[None]:
    """Around `main()`: Hydra's composition errors as one `error:` line with exit 2.

    Hydra catches them itself, prints them and calls `sys.exit(1)`, unless HYDRA_FULL_ERROR=1
    (its documented switch), with which it raises them instead; so it is set while Hydra
    composes, and the error is caught here. The task gives the user's setting back as it starts
    (`users_hydra_full_error`), so an error of the run itself is reported by Hydra as before
    (and a child process of a launcher inherits the user's value). A user who set
    HYDRA_FULL_ERROR=1 keeps Hydra's full traceback.
    """
    global _users_setting
    _users_setting = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except CompactHydraException as exc:
        if _users_setting == "1":
            raise
        stop_with_error(hydra_error_line(exc))
    finally:
        users_hydra_full_error()
        _users_setting = _NOT_SET


_NOT_SET = object()
# HYDRA_FULL_ERROR as the user had it, while hydra_errors_in_one_line holds it at 1
_users_setting: object = _NOT_SET


def users_hydra_full_error() -> None:
    """Put HYDRA_FULL_ERROR back as the user had it (no-op outside hydra_errors_in_one_line)."""
    if _users_setting is _NOT_SET:
        return
    if _users_setting is None:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
        os.environ["HYDRA_FULL_ERROR"] = str(_users_setting)


def remove_refused_run_folder() -> bool:
    """Remove this run's folder if a config refused before training is all it holds (see
    `remove_if_refused`); True if it was removed.

    The folder is the one Hydra made for this run (`hydra.runtime.output_dir`), whatever its
    name, so a unique suffix added to it changes nothing here.
    """
    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    return remove_if_refused(Path(hydra_cfg.runtime.output_dir), f"{hydra_cfg.job.name}.log")


def remove_if_refused(folder: Path, log_name: str) -> bool:
    """Remove `folder` if it holds only what a refused config leaves: Hydra's `.hydra/` and job
    log, and our `summary.json` saying `failed`. Anything else in it (a checkpoint, metrics, a
    file of the user's) keeps the folder. True if it was removed."""
    refused_leaves = {".hydra", "summary.json", log_name}
    if not folder.is_dir() or not {path.name for path in folder.iterdir()} <= refused_leaves:
        return False
    try:  # an ok or interrupted run's folder (its checkpoints moved away) is not a refusal
        if json.loads((folder / "summary.json").read_text()).get("status") != "failed":
            return False
    except (OSError, ValueError, AttributeError):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()
