"""The Trainer's profiler: ours (a shared null context per hook call) unless one is asked for."""

from __future__ import annotations

from pytorch_lightning.profilers import SimpleProfiler

from mpsciml.compose import build
from mpsciml.quiet_profiler import NoProfiler


def test_a_run_gets_the_profiler_that_builds_nothing_per_hook_call(tiny_config):
    module, trainer, parts = build(tiny_config())
    assert isinstance(trainer.profiler, NoProfiler)
    first, second = trainer.profiler.profile("a"), trainer.profiler.profile("b")
    assert first is second
    with first as entered:
        assert entered is None
    trainer.fit(module, datamodule=parts["datamodule"])  # every hook runs through it
    assert trainer.global_step == 3 and trainer.profiler.summary() == ""


def test_a_profiler_the_config_asks_for_is_lightnings(tiny_config):
    _, trainer, _ = build(tiny_config("+trainer.profiler=simple"))
    assert isinstance(trainer.profiler, SimpleProfiler)
