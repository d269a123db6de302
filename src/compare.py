"""DVC stage `compare`: rank every trained variant on the held-out test split and register the champion."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from catdog.data.require import require_data
from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)  # before TensorFlow is imported
    require_data(cfg.data, ("train", "test"))
    from catdog.compare.stage import compare

    details = compare(cfg)
    print(Path(cfg.compare.leaderboard).read_text(encoding="utf-8"))
    print(
        f"champion: {details['champion']} (registered as version {details['champion_version']}, "
        f"alias @{details['champion_alias']})"
    )


if __name__ == "__main__":
    main()
