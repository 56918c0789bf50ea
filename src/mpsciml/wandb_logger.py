"""Lightning's WandbLogger, with `log_model` that also works offline (our default).

Lightning refuses `log_model` together with `offline=True`, assuming an artifact needs the
network; wandb in fact keeps an offline run's artifacts in its run folder and `wandb sync`
uploads them with the rest. So this logger takes `log_model` over: the final checkpoint
(`checkpoints/last.ckpt`, never non-finite thanks to FiniteCheckpoint) is logged as the artifact
`model-<run id>` by `log_final_checkpoint`, which `finish_wandb` calls before it finishes the
run. That also covers diverged runs, whose last finite state is the most useful file they leave
(Lightning logs checkpoints only after a successful fit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    def __init__(self, *args: Any, log_model: bool | str = False, **kwargs: Any) -> None:
        super().__init__(*args, log_model=False, **kwargs)
        self.log_final_model = bool(log_model)

    def log_final_checkpoint(self, path: Path, metadata: dict[str, Any]) -> str | None:
        """Log `path` as this run's model artifact (when `log_model` is on); returns its name."""
        if not self.log_final_model or not path.is_file():
            return None
        import wandb

        name = f"model-{self.experiment.id}"
        artifact = wandb.Artifact(name=name, type="model", metadata=metadata)
        artifact.add_file(str(path), name="model.ckpt")
        self.experiment.log_artifact(artifact, aliases=["latest"])
        return name
