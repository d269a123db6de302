"""DVC stage `compare`: rank every trained variant on the held-out test split and register the champion."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from catdog.config import hydra_entry, require_data, validate


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)  # before TensorFlow is imported
    require_data(cfg.data, ("train", "test"))
    from catdog.compare import compare

    details = compare(cfg)
    print(Path(cfg.compare.leaderboard).read_text(encoding="utf-8"))
    print(
        f"champion: {details['champion']} (registered as version {details['champion_version']}, "
        f"alias @{details['champion_alias']})"
    )


if __name__ == "__main__":
    main()
