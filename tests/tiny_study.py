"""The tiny study (tiny generated data, one epoch per variant) built once per test session and shared by the test
groups that work on it: `dvc repro` in a copy of this checkout, then a pristine copy of the result taken before
any test changes it (conftest.built_study builds it under a lock, so pytest-xdist workers build it once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import yaml
from conftest import REPO, TINY_COUNTS, TINY_SIZE, make_dataset, zip_folder

from catdog.common.files import sha256_file
from catdog.data.manifests import content_hash, listing

VARIANTS = ("baseline", "transfer")  # the tiny study's variants, in params.yaml's order


@dataclass(frozen=True)
class TinyStudy:
    project: Path  # the study as `dvc repro` left it; the pipeline tests change it
    pristine: Path  # a copy taken right after, for the clone tests
    env: dict[str, str]


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def copy_project(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def shrink(project: Path, archive: Path) -> None:
    """Tiny images, tiny expected counts, the generated archive's sha256 and its images' content pin, random backbone
    weights (the transfer variant's and the audit's), one epoch per variant, one seed and two variants, nothing
    excluded."""

    def data(d):
        d["expected"] = {folder: {"cats": n, "dogs": n} for folder, n in TINY_COUNTS.items()}
        d["archive_sha256"] = sha256_file(archive)
        d["content_sha256"] = pin_images(archive, project / d["content_list"])
        d["download"]["backoff_s"] = 0.01
        d["min_holdout_per_class"] = 2

    edit_yaml(project / "conf/data/cats_and_dogs.yaml", data)
    edit_yaml(project / "conf/model/transfer.yaml", lambda m: m["net"].update(weights=None))
    edit_yaml(
        project / "conf/audit.yaml",
        lambda a: a["audit"].update(image_size=TINY_SIZE, backbone={"alpha": 1.0, "weights": None}),
    )
    tiny = {"epochs": 1, "image_size": TINY_SIZE, "batch_size": 8}
    edit_yaml(project / "params.yaml", lambda p: [v["trainer"].update(tiny) for v in p["variants"].values()])
    edit_yaml(project / "params.yaml", lambda p: p["data"].update(exclude=[]))  # the study's files are not in it
    # Its tests are of the pipeline: one seed, and two variants, the CNN and the backbone (the other two CNNs are
    # baseline's layers plus preprocessing ones: each would add a TensorFlow process per stage they pass through).
    edit_yaml(project / "params.yaml", lambda p: p["study"].update(seeds=[42], variants=list(VARIANTS)))


def pin_images(archive: Path, listing_file: Path) -> str:
    """Write the listing of the tiny archive's images where the data config names it; return their content hash."""
    with zipfile.ZipFile(archive) as zf:
        top = zf.namelist()[0].split("/")[0] + "/"
        pairs = [
            (i.filename.removeprefix(top), sha256(zf.read(i)).hexdigest()) for i in zf.infolist() if not i.is_dir()
        ]
    listing_file.write_text(listing(pairs))
    return content_hash(pairs)


def dvc_status(root: Path, env: dict[str, str]) -> set[str]:
    """The stages `dvc status` says are out of date."""
    return set(json.loads(sh(sys.executable, "-m", "dvc", "status", "--json", cwd=root, env=env)))


def study_env(archive: Path) -> dict[str, str]:
    """This environment for the study's commands: the tiny archive as the data mirror, the default MLflow store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        CATDOG_DATA_MIRROR=str(archive),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


def build(root: Path) -> TinyStudy:
    """Build the tiny study under `root` (once: a finished build is reused)."""
    archive, project, pristine = root / "mirror.zip", root / "project", root / "pristine"
    env = study_env(archive)
    if not (root / "built").exists():
        shutil.rmtree(root, ignore_errors=True)
        zip_folder(make_dataset(root / "source"), archive)
        copy_project(project)
        shrink(project, archive)
        sh("git", "init", "-q", cwd=project, env=env)
        sh("git", "add", "-A", cwd=project, env=env)
        sh("git", "commit", "-qm", "tiny study", cwd=project, env=env)
        sh(sys.executable, "-m", "dvc", "repro", cwd=project, env=env)
        shutil.copytree(project, pristine, symlinks=True)
        (root / "built").touch()
    return TinyStudy(project, pristine, env)
