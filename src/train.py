"""Train one run: `python src/train.py variant=transfer`, `model=transfer augment=on`, or `--multirun` sweeps."""

import hydra
from omegaconf import DictConfig

from catdog.training import train


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    print(f"{cfg.name}: best val accuracy {metrics['best_val_accuracy']:.4f} after {metrics['epochs_run']} epochs")
    return metrics["best_val_accuracy"]


if __name__ == "__main__":
    main()
