"""Train one run: `python src/train.py variant=transfer`, `model=transfer augment=on`, or `--multirun` sweeps."""

import hydra
from omegaconf import DictConfig

from catdog.data.require import require_data
from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry, name_sweep_job
from catdog.train import onednn


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> float:
    validate(cfg)  # before TensorFlow is imported: a mistyped value fails in about a second
    require_data(cfg.data, ("train", "val"))  # and so does a fresh checkout before `dvc repro split`
    from catdog.tracking.connect import check_reachable, tracking_uri  # MLflow, 1 s: after the checks needing none

    check_reachable(tracking_uri(cfg.tracking.uri), cfg.tracking.connect_timeout_s)  # a refusing server: before TF
    name_sweep_job(cfg)
    onednn.apply(cfg)  # TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, as the next line imports it
    from catdog.train.run import train

    metrics = train(cfg)
    print(f"{cfg.name}: best val accuracy {metrics['best_val_accuracy']:.4f} after {metrics['epochs_run']} epochs")
    return metrics["best_val_accuracy"]


if __name__ == "__main__":
    main()
