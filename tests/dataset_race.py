"""The race two trainings at once met in CI, on SQLite and on the team's PostgreSQL: both look the split's dataset
up in the store, find nothing, and insert it; the later insert breaks the store's unique key. Here the other run's
insert is made to land between this run's look-up and its insert, every time (SQLAlchemy's before_flush)."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
from mlflow.entities import Dataset, DatasetInput
from mlflow.store.tracking.dbmodels.models import SqlDataset
from sqlalchemy import event
from sqlalchemy.orm import Session

from catdog.tracking.provenance import log_split_inputs


def log_the_split_while_another_run_inserts_it_first(store_uri: str, folder: Path) -> None:
    """Log a split's manifest into a run of `store_uri` while another run inserts the same dataset in between;
    both runs must end with it as their input."""
    manifest = folder / "split" / "train.csv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("path,label,sha256\na.jpg,cats,00\nb.jpg,dogs,11\n")
    client = mlflow.MlflowClient(store_uri)
    experiment_id = client.create_experiment(f"race-{folder.name}")
    other = client.create_run(experiment_id).info.run_id
    raced: list[str] = []

    def the_other_run_inserts_first(session: Session, *_) -> None:
        rows = [row for row in session.new if isinstance(row, SqlDataset)]
        if rows and not raced:
            row = rows[0]
            raced.append(row.name)
            dataset = Dataset(
                row.name, row.digest, row.dataset_source_type, row.dataset_source, row.dataset_schema,
                row.dataset_profile,
            )  # fmt: skip
            competitor = threading.Thread(target=client.log_inputs, args=(other, [DatasetInput(dataset)]))
            competitor.start()
            competitor.join()

    mlflow.set_tracking_uri(store_uri)
    event.listen(Session, "before_flush", the_other_run_inserts_first)
    try:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            log_split_inputs(manifest.parent, {"train": "training"})
    finally:
        event.remove(Session, "before_flush", the_other_run_inserts_first)
    assert raced == ["train"]
    for run_id in (run.info.run_id, other):
        (logged,) = client.get_run(run_id).inputs.dataset_inputs
        assert logged.dataset.name == "train" and str(manifest.resolve()) in logged.dataset.source
