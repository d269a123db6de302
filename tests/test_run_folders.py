"""Each entry point's Hydra folder (its log and .hydra/) is named after what ran: a training run after the run
(outputs/<date>/<time>-baseline), any other stage after itself (outputs/<date>/<time>-download), never after the
training config it does not use. Fast: no TensorFlow."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import CONF, REPO, expected_overrides, run_entry
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import catdog.settings.hydra_app  # noqa: F401  registers the resolver the run folder's name uses, as every entry point does
from catdog.settings.params import compose_config

TIME = r"\d{2}-\d{2}-\d{2}"


def test_the_download_stage_logs_under_its_own_name(tmp_path: Path, tiny_archive: Path) -> None:
    env = {**os.environ, "CATDOG_DATA_MIRROR": str(tiny_archive)}
    unpinned = [f"data.{key}=null" for key in compose_config(CONF).data if key.endswith("sha256")]  # a tiny archive
    result = run_entry("download.py", *unpinned, *expected_overrides(), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert re.fullmatch(rf"{TIME}-download", run.name), run
    assert (run / "download.log").is_file() and (run / ".hydra" / "config.yaml").is_file()


def run_dir(script: str, *overrides: str) -> str:
    """The run folder Hydra makes for `src/<script>` (Hydra names the job after the script) with these overrides."""
    with initialize_config_dir(config_dir=str(CONF), job_name=Path(script).stem, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return OmegaConf.select(cfg, "hydra.run.dir")


def stages_on_the_root_config() -> list[str]:
    """The entry points that compose conf/config.yaml (conf/search.yaml sets its own folder)."""
    return sorted(p.name for p in (REPO / "src").glob("*.py") if 'config_name="config"' in p.read_text())


@pytest.mark.parametrize("script", [s for s in stages_on_the_root_config() if s != "train.py"])
def test_a_stage_that_trains_nothing_is_named_after_itself(script: str) -> None:
    assert re.fullmatch(rf"outputs/\d{{4}}-\d{{2}}-\d{{2}}/{TIME}-{Path(script).stem}", run_dir(script))


@pytest.mark.parametrize(
    ("overrides", "name"),
    [([], "cnn-augment_off"), (["variant=baseline"], "baseline"), (["name=mine"], "mine")],
)
def test_a_training_run_is_named_after_the_run(overrides: list[str], name: str) -> None:
    assert "train.py" in stages_on_the_root_config()
    assert re.fullmatch(rf"outputs/\d{{4}}-\d{{2}}-\d{{2}}/{TIME}-{name}", run_dir("train.py", *overrides))
