"""DVC stage `split`: fixed stratified train/val/test manifests, a rejects list, a data report and a sample figure."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from catdog.common import plots
from catdog.common.files import write_json
from catdog.data.checksums import DataPin
from catdog.data.split import Exclusion, data_report, make_split
from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)
    data = cfg.data
    dataset_dir = Path(data.dataset_dir)
    splits, rejects = make_split(
        dataset_dir=dataset_dir,
        split_dir=Path(data.split_dir),
        classes=list(data.classes),
        train_folder=data.train_folder,
        holdout_folder=data.holdout_folder,
        test_fraction=data.test_fraction,
        seed=data.split_seed,
        min_holdout_per_class=data.min_holdout_per_class,
        pin=DataPin.of(data),
        exclusions=[Exclusion(x["path"], x["reason"]) for x in data.exclude],
    )
    report = data_report(splits, list(data.classes), len(rejects), len(data.exclude))
    write_json(data.report_path, report)
    samples = {
        cls: [e.path for e in splits["train"] if e.label == cls][: data.samples_per_class] for cls in data.classes
    }
    plots.save(plots.sample_grid(dataset_dir, samples), Path(data.samples_plot))
    print(
        f"split written to {data.split_dir}: {report['counts']}; {len(rejects)} rejected ({len(data.exclude)} excluded)"
    )


if __name__ == "__main__":
    main()
