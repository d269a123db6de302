"""Where a run's files go: the study's places, which DVC tracks, or an ad-hoc run's own folder. No TensorFlow: the
stages that read a study (compare, report, predict's fallback) find its files here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from catdog.settings.params import study_run


@dataclass(frozen=True)
class Outputs:
    """Where a run writes its model, metrics and plots."""

    model: Path
    record: Path
    metrics: Path
    history: Path
    curves: Path
    augmentation: Path

    @classmethod
    def study(cls, trainer: DictConfig, name: str, seed: int) -> Outputs:
        """The study's outputs of variant `name` trained with `seed`, which DVC tracks (stage train@<name>-<seed>):
        models/<name>-<seed>/, metrics/train/<name>-<seed>.json, records/train/<name>-<seed>.json (the run's record:
        what it ran with, where, when, and its MLflow ids) and plots/train/<name>-<seed>/."""
        run = study_run(name, seed)
        plots_dir = Path(trainer.plots_dir) / run
        return cls(
            model=Path(trainer.models_dir) / run / "model.keras",
            record=Path(trainer.records_dir) / f"{run}.json",
            metrics=Path(trainer.metrics_dir) / f"{run}.json",
            history=plots_dir / "history.csv",
            curves=plots_dir / "curves.png",
            augmentation=plots_dir / "augmentation.png",
        )

    @classmethod
    def in_folder(cls, folder: Path) -> Outputs:
        """An ad-hoc run's outputs, all in one folder."""
        names = ("model.keras", "run.json", "metrics.json", "history.csv", "curves.png", "augmentation.png")
        return cls(*(folder / n for n in names))

    def where(self) -> str:
        """The folders (and metrics file) the outputs are in, for the user."""
        if self.metrics.parent == self.model.parent:
            return f"{self.model.parent}/"
        return f"{self.model.parent}/, {self.metrics}, {self.history.parent}/"

    @classmethod
    def for_run(cls, cfg: DictConfig) -> Outputs:
        """`trainer.outputs=study`: the study's; else the run's Hydra folder (outputs/<name>/ outside Hydra)."""
        if cfg.trainer.outputs == "study":
            return cls.study(cfg.trainer, cfg.name, cfg.seed)
        if not HydraConfig.initialized():
            return cls.in_folder(Path("outputs") / cfg.name)
        folder = Path(HydraConfig.get().runtime.output_dir)
        return cls.in_folder(folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder)
