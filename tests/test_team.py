"""The team server on the real engines: PostgreSQL, `mlflow server` with basic auth and Swift's S3 API for its
artifacts, started once by the fixture on 127.0.0.1 (catdog.team.server --s3, as the README's team setup does), with
runs, figures, models and the registry going through it; two trainings at once; the MLflow server killed mid-run and
restarted alone; clients without valid credentials; secrets in 0600 files and off every command line; add-user."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, expected_overrides, run_entry, tiny_overrides, without_tensorflow
from dataset_race import log_the_split_while_another_run_inserts_it_first
from mlflow import MlflowClient

from catdog.team import server as team_server
from catdog.team import swift
from catdog.team import users as team_users
from catdog.team.postgres import Cluster
from catdog.tracking.connect import TrackingServerError, connect

pytestmark = [pytest.mark.slow, pytest.mark.requires("postgres", "swift"), pytest.mark.xdist_group("team")]
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass
class Team:
    folder: Path
    uri: str
    users: dict[str, str]  # name → password, the admin included

    def env(self, user: str | None, password: str | None = None, **extra: str) -> dict[str, str]:
        """This process's environment pointed at the server, as `user` (None: no credentials)."""
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
        env.update(MLFLOW_TRACKING_URI=self.uri, **extra)
        if user:
            env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password or self.users[user])
        return env

    def client(self, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
        """A client of the server with the admin's credentials."""
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team_server.ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", self.users[team_server.ADMIN])
        return MlflowClient(self.uri)


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    # A folder start creates (and makes 0711 as root), under /tmp: the postgres user can reach it.
    folder = Path(tempfile.gettempdir()) / f"catdog-team-{secrets.token_hex(6)}"
    try:
        started = time.monotonic()
        state = team_server.start(folder, s3=True)
        print(f"team server up in {time.monotonic() - started:.1f} s")
        users = {team_server.ADMIN: team_server.admin_password(folder), "alice": team_users.add_user(folder, "alice")}
        yield Team(folder, state["uri"], users)
    finally:
        team_server.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def runs_named(client: MlflowClient, prefix: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiments) if r.info.run_name.startswith(prefix)]


def secret_values(folder: Path) -> dict[str, str]:
    """Every secret the team server generated under `folder`, by file name."""
    names = ("admin_password", "flask_secret_key", "postgres.password", "postgres.mlflow.password", "s3/s3_secret")
    return {name: (folder / name).read_text().strip() for name in (*names, "s3/hash_suffix")}


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def cli(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python src/team_server.py ARGS --folder FOLDER`, with `env` over this environment."""
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"} | env
    command = [sys.executable, str(REPO / "src" / "team_server.py"), *args, "--folder", str(folder)]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=180)


def two_epochs(variant: str) -> list[str]:
    """The study's run of `variant`, shrunk (tiny_overrides) to two epochs: two logged epochs per run."""
    return [o for o in tiny_overrides(variant) if o != "trainer.epochs=1"] + ["trainer.epochs=2"]


def adhoc(name: str, *extra: str) -> list[str]:
    overrides = [o for o in tiny_overrides("baseline", outputs="adhoc") if o != "trainer.epochs=1"]
    return [*overrides, f"name={name}", *extra]


def test_a_client_without_valid_credentials_is_refused_in_one_line_and_writes_nothing(
    team: Team, split_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused before TensorFlow is imported (seconds, not the import's): the run fails if it imports it.
    env = without_tensorflow(team.env(None), split_data.parent, "train.py imported TensorFlow before connecting")
    result = run_entry("train.py", *adhoc("refused", "trainer.epochs=1"), cwd=split_data, env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tracking error: MLflow tracking server {team.uri} answered")
    assert "HTTP 401" in last and "no credentials" in last and "MLFLOW_TRACKING_USERNAME" in last
    # Hydra's own record of the command (outputs/<date>/<time>-refused/.hydra/) is all there is: no model, no checkpoint.
    assert not list(split_data.rglob("*.keras")) and not (split_data / "checkpoints").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(TrackingServerError, match=r"HTTP 401 Unauthorized \(user 'alice'\)"):
        connect(team.uri, "catdog-study", timeout_s=10)
    assert runs_named(team.client(monkeypatch), "refused") == []


def test_a_short_study_trained_two_at_once_tracks_every_epoch_once_through_the_server(
    team: Team, split_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = team.env("alice")
    trainings = [
        subprocess.Popen(
            [sys.executable, str(REPO / "src" / "train.py"), *two_epochs(variant)],
            cwd=split_data,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for variant in ("baseline", "augmented")
    ]
    for training in trainings:
        _, err = training.communicate(timeout=600)
        assert training.returncode == 0, err[-3000:]
    result = run_entry(
        "compare.py",
        "study.variants=[baseline,augmented]",
        "study.seeds=[42]",
        *expected_overrides(),
        cwd=split_data,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = team.client(monkeypatch)
    experiment = client.get_experiment_by_name("catdog-study")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    runs |= {r.data.tags["variant"]: r for r in runs.values() if r.info.run_name.endswith("-42")}
    assert {"baseline-42", "augmented-42", "compare"} <= set(runs)
    spans = [(runs[v].info.start_time, runs[v].info.end_time) for v in ("baseline", "augmented")]
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the two trainings ran one after the other: {spans}"
    for variant in ("baseline", "augmented"):
        run = runs[variant]
        assert run.info.status == "FINISHED"
        for key in ("loss", "val_accuracy"):  # each epoch exactly once, though two runs logged at the same time
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1], (variant, key)
        assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train", "val"}
        figure = client.download_artifacts(run.info.run_id, "figures/learning_curves.png", str(split_data))
        assert Path(figure).read_bytes().startswith(b"\x89PNG")  # through the server's artifact proxy
    # ... from the S3 bucket the server keeps them in (the client never saw S3 credentials).
    stored = swift.S3Server(team.folder / "s3").client().list_objects_v2(Bucket="mlflow")["Contents"]
    for variant in ("baseline", "augmented"):
        assert any(
            o["Key"].endswith(f"{runs[variant].info.run_id}/artifacts/figures/learning_curves.png") for o in stored
        ), [o["Key"] for o in stored][:20]
    trained = {runs[v].info.run_id for v in ("baseline", "augmented")}
    logged = [m for m in client.search_logged_models([experiment.experiment_id]) if m.source_run_id in trained]
    assert len(logged) == 4  # the Keras model and the classifier of each run
    registered = client.get_registered_model("catdog")
    ((alias, version),) = registered.aliases.items()  # no git here: the pick is a challenger
    assert alias == "challenger"
    assert client.get_model_version("catdog", version).run_id in {
        runs["baseline"].info.run_id,
        runs["augmented"].info.run_id,
    }


def test_a_run_whose_server_dies_stops_by_name_and_resumes_into_the_same_run(
    team: Team, split_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    epochs = 8  # the trainer is held (SIGSTOP) at its first logged epoch, so a few are enough
    cmd = [
        sys.executable,
        str(REPO / "src" / "train.py"),
        *adhoc("interrupted", f"trainer.epochs={epochs}", "trainer.early_stopping.enabled=false"),
    ]
    # MLflow retries a failed call for minutes by default; here the loss must show at once.
    env = team.env("alice", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    client = team.client(monkeypatch)
    trainer = subprocess.Popen(cmd, cwd=split_data, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and trainer.poll() is None:
        runs = runs_named(client, "interrupted")
        if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
            break
        time.sleep(0.05)
    trainer.send_signal(signal.SIGSTOP)  # hold it between epochs while the server goes down
    state = team_server.read_state(team.folder)
    os.killpg(state["server"]["pid"], signal.SIGKILL)
    trainer.send_signal(signal.SIGCONT)
    _, err = trainer.communicate(timeout=300)
    assert trainer.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"tracking error: MLflow tracking server {team.uri} stopped answering during the run")
    assert "checkpoints/adhoc/interrupted" in last
    assert any((split_data / "checkpoints" / "adhoc" / "interrupted").iterdir())

    restarted = team_server.restart_mlflow(team.folder)  # the MLflow server alone; PostgreSQL and Swift kept running
    assert restarted["uri"] == team.uri and restarted["server"]["pid"] != state["server"]["pid"]
    # MLflow's own retries and timeout again: 5 s per request is for noticing the loss, and a busy machine can take
    # longer than that to store an artifact in Swift.
    resumed = team.env("alice")
    result = subprocess.run(cmd, cwd=split_data, env=resumed, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_named(client, "interrupted")
    assert len(runs) == 1, "the resumed run opened a new MLflow run"
    assert runs[0].info.status == "FINISHED"
    for key in ("loss", "val_accuracy"):
        assert [m.step for m in client.get_metric_history(runs[0].info.run_id, key)] == list(range(epochs))


def test_every_file_holding_a_secret_is_0600_in_a_folder_closed_to_others(team: Team) -> None:
    values = secret_values(team.folder)
    holders = []
    for path in team.folder.rglob("*"):
        small = path.is_file() and not path.is_relative_to(team.folder / "postgres") and path.stat().st_size < 1 << 20
        if small and any(value in path.read_text(errors="replace") for value in values.values()):
            holders.append(path.relative_to(team.folder).as_posix())
            assert mode(path) == 0o600, path
    expected = {*values, "basic_auth.ini", "s3/proxy-server.conf", "s3/swift.conf", "s3/aws_credentials"}
    assert expected <= set(holders), holders
    # The postgres user passes through the top folder (0711 as root) to its cluster; nothing else is open to others.
    assert mode(team.folder) == (0o711 if os.geteuid() == 0 else 0o700)
    assert mode(team.folder / "s3") == mode(team.folder / "postgres") == 0o700
    assert mode(team.folder / team_server.STATE) == 0o600


def test_no_command_line_shows_a_secret(team: Team) -> None:
    values = secret_values(team.folder)
    server = team_server.read_state(team.folder)["server"]["pid"]
    group = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:  # not a process, or gone
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[2]) == server:  # the server and its workers
            group.append(argv.replace("\0", " "))
            assert "postgresql" not in argv and "s3://" not in argv, argv
        for name, value in values.items():
            assert value not in argv, f"{name} on the command line of {proc.name}"
    assert any("mlflow server" in argv for argv in group) and len(group) >= 2, group
    assert not [argv for argv in group if "mlflow.server.jobs" in argv], "the server started GenAI job runners"


def test_mlflow_connects_as_its_own_role_that_owns_its_databases_only(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    team.client(monkeypatch).search_experiments()  # a request that uses both databases
    cluster = Cluster(team.folder / "postgres")
    with psycopg.connect(cluster.uri("postgres", driver=""), autocommit=True) as conn:
        query = "SELECT DISTINCT datname, usename FROM pg_stat_activity WHERE datname LIKE 'mlflow%'"
        assert set(conn.execute(query).fetchall()) == {("mlflow", "mlflow"), ("mlflow_auth", "mlflow")}
        query = "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'mlflow'"
        assert conn.execute(query).fetchone() == (False, False, False)
        query = "SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = 'mlflow'"
        assert sorted(row[0] for row in conn.execute(query)) == ["mlflow", "mlflow_auth"]
    with psycopg.connect(cluster.uri("mlflow", driver=""), autocommit=True) as conn:
        owners = conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert owners == [("mlflow",)]  # MLflow's migrations ran as the role


def test_runs_logging_the_same_split_at_the_same_moment_both_get_it_on_postgres(team: Team, tmp_path: Path) -> None:
    """The race CI met through the team's server, on its PostgreSQL store directly (tests/dataset_race.py): the
    later insert fails with PostgreSQL's own words for the broken key, and the run links to the first one's row."""
    store = Cluster(team.folder / "postgres").uri(team_server.DATABASES[0], role=team_server.ROLE)
    log_the_split_while_another_run_inserts_it_first(store, tmp_path)


def test_add_user_writes_the_password_to_a_0600_file_and_refuses_a_wrong_admin_password(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli(team.folder, "add-user", "bob")
    assert result.returncode == 0, result.stderr
    path = team.folder / "users" / "bob.password"
    password = path.read_text().strip()
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert str(path) in result.stdout and password not in result.stdout + result.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    assert MlflowClient(team.uri).search_experiments()  # the password in the file is bob's

    shown = cli(team.folder, "add-user", "bob", "--new-password", "--print-password")
    assert shown.returncode == 0, shown.stderr
    assert f'MLFLOW_TRACKING_PASSWORD="{path.read_text().strip()}"' in shown.stdout

    refused = cli(team.folder, "add-user", "carol", MLFLOW_AUTH_ADMIN_PASSWORD="wrong")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"team server error: the server at {team.uri} refused the admin's password"), line
    assert "$MLFLOW_AUTH_ADMIN_PASSWORD must hold" in line
    assert not (team.folder / "users" / "carol.password").exists()
