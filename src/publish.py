"""Log the study's files (records/, metrics/, plots/, models/, reports/) into the current tracking store as runs, once:
`python src/publish.py` after `dvc pull`, to browse a teammate's study in your own MLflow UI."""

import hydra
from omegaconf import DictConfig

from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from catdog.publish.study import publish
    from catdog.tracking.connect import connect, tracking_uri

    uri = tracking_uri(cfg.tracking.uri)
    done = publish(cfg, connect(uri, cfg.tracking.experiment, cfg.tracking.connect_timeout_s))
    added = ", ".join(done.added) or "nothing"
    present = f"; already there: {', '.join(done.present)}" if done.present else ""
    registered = ""
    if done.registered:
        version, alias = done.registered
        registered = f"; registered {cfg.tracking.registered_model} version {version} (@{alias})"
    print(f"published into {uri}: {added}{present}{registered}")


if __name__ == "__main__":
    main()
