"""DVC stage `download`: fetch the archive (or $CATDOG_DATA_MIRROR), check its sha256 where one is pinned, extract it
safely, check its layout and its images' content hash."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from catdog.data.checksums import DataPin
from catdog.data.download import download_dataset
from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)
    data = cfg.data
    counts = download_dataset(
        urls=list(data.urls),
        mirror_env=data.mirror_env,
        raw_dir=Path(data.raw_dir),
        dataset_dir=Path(data.dataset_dir),
        expected=data.expected,
        pin=DataPin.of(data),
        attempts=data.download.attempts,
        backoff_s=data.download.backoff_s,
        timeout_s=data.download.timeout_s,
    )
    print(f"data set ready in {data.dataset_dir}: {counts}")


if __name__ == "__main__":
    main()
