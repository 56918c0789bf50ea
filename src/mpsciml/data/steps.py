"""Batches indexed by the training step: what both DataModules are built on, and how they resume.

A SciML run is `max_steps` steps of one epoch, and what step s trains on is a function of the run
seed and s alone (the collocation points drawn for it, the functions chosen for it), never of
what came before. So a dataset here is a grid of items, `items_per_step` per step: flat index
i is item `i % items_per_step` of step `start_step + i // items_per_step`, and one batch is one
step's items. The sampler is a `DistributedSampler` (`StepSampler`) for the trainer's world size
and rank that deals each step's items round-robin (rank r takes slots r, r + W, ...) and hands
the loader one list of flat indices per step, so the shares are disjoint and may be uneven
(5 items on 2 ranks: 3 + 2); the modules weight every rank's loss by the global count
(`mpsciml.distributed.integrity`), so an uneven split still gives the full-batch loss. It is
ours and not the one Lightning would inject because Lightning shuffles every training loader's
indices, which would mix the steps; being a DistributedSampler, Lightning leaves it in place
(with or without `use_distributed_sampler`).

Resuming is Lightning's: `StepLoader` implements `state_dict`/`load_state_dict` (Lightning
restores a loader's position only then, see `loops/fit_loop.py` and
`utilities/combined_loader.py`), and its state is the next step. Loading it moves the dataset's
`start_step`, so the sampler's indices count from there on every rank. The loader's length stays
the whole run (`max_steps` batches), as Lightning expects of a resumed loader, so the progress
bar shows the whole run too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mpsciml.data.same_batch import SameBatchMemo
from mpsciml.distributed.integrity import check_share


class StepDataset(Dataset):
    """`items_per_step` items for each of `steps` steps, counted from `start_step`.

    A subclass says what the items of one step are (`step_items`); the batch of a step is built
    in one call (`__getitems__`), not item by item, so a step costs one gather.
    """

    def __init__(self, steps: int, items_per_step: int) -> None:
        if steps < 1 or items_per_step < 1:
            raise ValueError(f"need steps, items_per_step >= 1, got {steps}, {items_per_step}")
        self.steps = steps
        self.items_per_step = items_per_step
        self.start_step = 0

    def __len__(self) -> int:
        return self.steps * self.items_per_step

    def __getitem__(self, index: int | list[int]) -> Any:
        """One item, or a rank's share of a step (what `StepSampler` yields)."""
        return self.__getitems__(index if isinstance(index, list) else [index])

    def __getitems__(self, indices: list[int]) -> Any:
        """In Python integers up to the one tensor of slots: this runs every step, and tensor
        operators on a handful of indices cost more than the arithmetic."""
        lowest, highest = min(indices), max(indices)
        step = lowest // self.items_per_step
        if highest // self.items_per_step != step:
            raise ValueError(
                f"a batch holds the items of one step, got items {lowest}..{highest}: the batch "
                f"size must divide items_per_step={self.items_per_step}"
            )
        first = step * self.items_per_step
        slots = torch.tensor([index - first for index in indices], dtype=torch.long)
        return self.step_items(self.start_step + step, slots)

    def step_items(self, step: int, slots: Tensor) -> Any:
        """The batch of `step` made of its items `slots` (a rank's share, in slot order)."""
        raise NotImplementedError


class StepSampler(DistributedSampler):
    """Rank `rank`'s share of every step, in step order: the list of flat indices of slots
    rank, rank + R, ... of the step (R = num_replicas). A loader takes each list as one batch
    (`batch_size=None`), so shares need not be equal; a rank with no slot is refused. Neither
    shuffles (a step's items are already in a seeded order) nor lists the run's indices."""

    def __init__(
        self, dataset: StepDataset, num_replicas: int = 1, rank: int = 0, key: str = "items"
    ) -> None:
        check_share(dataset.items_per_step, num_replicas, key)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.steps, self.items_per_step = dataset.steps, dataset.items_per_step

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        per_step = self.items_per_step
        for first in range(0, self.steps * per_step, per_step):
            yield list(range(first + self.rank, first + per_step, self.num_replicas))

    def share(self) -> int:
        """Items per step on this rank."""
        return len(range(self.rank, self.items_per_step, self.num_replicas))


def whole_batch(batch: Any) -> Any:
    """The collate function: `StepDataset.__getitems__` returns the batch already assembled."""
    return batch


class StepLoader(DataLoader):
    """A DataLoader over a `StepDataset` whose state (for Lightning's checkpoints) is the next
    step. Counted where the batches leave the loader, so it is exact with or without workers."""

    def __init__(self, dataset: StepDataset, **kwargs: Any) -> None:
        kwargs.setdefault("collate_fn", whole_batch)
        if isinstance(kwargs.get("sampler"), StepSampler):
            kwargs.setdefault("batch_size", None)  # the sampler yields each step's share whole
        super().__init__(dataset, **kwargs)
        self._next_step = dataset.start_step

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        """The batches from the dataset's start step to the end of the run."""
        dataset: StepDataset = self.dataset  # type: ignore[assignment]
        self._next_step = dataset.start_step
        batches = self._direct_batches() if self._direct() else super().__iter__()
        while self._next_step < dataset.steps:
            try:
                batch = next(batches)
            except StopIteration:
                return
            self._next_step += 1
            yield batch

    def _direct(self) -> bool:
        """Whether the batches can come straight from the sampler and the dataset: in this
        process, one whole step per sampler entry, nothing to pin. torch's loader iterator
        would do the same through bookkeeping of its own per step (a profiler record, state
        checks), which a small compiled PINN step notices."""
        return (
            self.num_workers == 0
            and isinstance(self.sampler, StepSampler)
            and self.batch_sampler is None
            and not self.pin_memory
        )

    def _direct_batches(self) -> Iterator[Any]:
        for indices in self.sampler:
            yield self.collate_fn(self.dataset.__getitems__(indices))  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, int]:
        return {"next_step": self._next_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        dataset: StepDataset = self.dataset  # type: ignore[assignment]
        dataset.start_step = self._next_step = int(state["next_step"])


class StepDataModule(pl.LightningDataModule):
    """What the DataModules of every problem kind share: a step-indexed, resumable train loader
    and a one-tick validation loader (validation measures the model against the problem's
    reference on its own grid or test set, so it needs no batches)."""

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"trainer.max_steps={max_steps} must be >= 1")
        self.max_steps = max_steps
        self._moved = SameBatchMemo()

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Lightning's move, skipped when the batch is the last one again (`SameBatchMemo`)."""
        move = super().transfer_batch_to_device
        return self._moved(batch, device, lambda b: move(b, device, dataloader_idx))

    @property
    def world_size(self) -> int:
        """Processes sharing each step (DDP ranks); 1 outside a trainer."""
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def step_dataset(self) -> StepDataset:
        """A fresh dataset of the run's steps (fresh, so a loader never inherits a position)."""
        raise NotImplementedError

    #: the config key that sets the items per step, named when a rank would get none
    share_key = "items"

    def train_dataloader(self) -> StepLoader:
        dataset = self.step_dataset()
        sampler = StepSampler(dataset, self.world_size, self.rank, key=self.share_key)
        return StepLoader(dataset, batch_size=None, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(range(1), batch_size=None)
