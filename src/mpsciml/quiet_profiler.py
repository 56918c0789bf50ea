"""A Trainer profiler that costs nothing when nobody profiles.

Lightning wraps every hook it calls (dozens per training step: the loop's stages, each
callback's and the module's hooks, the optimizer step) in `trainer.profiler.profile(name)`. Its
default, `PassThroughProfiler`, records nothing, but its `profile` is a generator-based context
manager, built and torn down at every call, several times the cost of entering a shared
`contextlib.nullcontext`; on a small compiled PINN, whose whole step is a few milliseconds,
that adds up to a visible share of the framework's overhead. `NoProfiler.profile` hands back one
shared nullcontext instead. `compose.build`
gives it to the Trainer unless the config names a profiler (`+trainer.profiler=simple`), which
is then Lightning's, as asked.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pytorch_lightning.profilers import PassThroughProfiler

#: entered and left by every hook call; a nullcontext holds no state, so one serves them all
_NOTHING = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    """`PassThroughProfiler` without a context manager built per call."""

    def profile(self, action_name: str) -> Any:  # type: ignore[override]
        return _NOTHING
