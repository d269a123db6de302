"""Search a variant's training settings over seeds: `python src/search.py hparams_search=baseline`; apply the best
trial to params.yaml: `python src/search.py hparams_search=baseline search.apply=true` (conf/search.yaml)."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from catdog.settings.hydra_app import hydra_entry


@hydra.main(config_path="../conf", config_name="search", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    from catdog.search import run

    if cfg.search.apply:
        changed = run.apply(cfg)
        for key, (old, new) in changed.items():
            print(f"{key}: {old} -> {new}")
        print(f"search {cfg.search.name}: {len(changed)} settings applied" + "; run `dvc repro`" * bool(changed))
        return
    overrides = HydraConfig.get().overrides
    study = run.search(cfg, list(overrides.task), list(overrides.hydra), Path(HydraConfig.get().runtime.output_dir))
    best = run.best_line(study)
    print(f"search {cfg.search.name}: {best}")


if __name__ == "__main__":
    main()
