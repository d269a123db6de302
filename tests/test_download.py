"""The download stage: real HTTP from a loopback server, retries, truncation, unsafe archives, wrong layouts."""

from __future__ import annotations

import http.server
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CLASS_COLOURS, CONF, TINY_COUNTS, make_dataset, zip_folder

from catdog.common.files import sha256_file
from catdog.data.checksums import ChecksumError
from catdog.data.download import ArchiveError, DownloadError, download_dataset, mirror_source, safe_extract
from catdog.settings.params import compose_config

EXPECTED = {folder: {cls: n for cls in CLASS_COLOURS} for folder, n in TINY_COUNTS.items()}
MIRROR_ENV = "CATDOG_TEST_MIRROR"

Responder = Callable[[http.server.BaseHTTPRequestHandler, int], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Responder], str]]:
    """Start a loopback HTTP server whose n-th request is answered by `responder(handler, n)`."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(responder: Responder) -> str:
        calls = {"n": 0}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                calls["n"] += 1
                responder(self, calls["n"])

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/cats_and_dogs_filtered.zip"

    yield start
    for server in servers:
        server.shutdown()


def send(handler: http.server.BaseHTTPRequestHandler, body: bytes, length: int | None = None) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


def run_download(tmp_path: Path, urls: list[str], attempts: int = 3, sha256: str | None = None) -> dict:
    """Download into tmp_path/raw; `sha256` pins the archive (None: the generated archive's is not pinned)."""
    return download_dataset(
        urls,
        MIRROR_ENV,
        tmp_path / "raw",
        tmp_path / "raw" / "dataset",
        EXPECTED,
        sha256=sha256,
        attempts=attempts,
        backoff_s=0.01,
        timeout_s=5,
    )


def test_retries_a_failed_attempt_then_succeeds(tmp_path: Path, tiny_archive: Path, serve) -> None:
    body = tiny_archive.read_bytes()

    def flaky(handler, n):
        if n == 1:
            handler.send_error(503, "try later")
        else:
            send(handler, body)

    counts = run_download(tmp_path, [serve(flaky)])
    assert counts == EXPECTED
    assert len(list((tmp_path / "raw" / "dataset" / "train" / "cats").glob("*.jpg"))) == TINY_COUNTS["train"]
    assert not (tmp_path / "raw" / "archive.zip").exists()


def test_falls_back_to_the_second_url(tmp_path: Path, tiny_archive: Path, serve) -> None:
    dead = serve(lambda h, n: h.send_error(404, "gone"))
    alive = serve(lambda h, n: send(h, tiny_archive.read_bytes()))
    assert run_download(tmp_path, [dead, alive]) == EXPECTED


def test_a_connection_dropped_mid_download_is_retried(tmp_path: Path, tiny_archive: Path, serve) -> None:
    body = tiny_archive.read_bytes()

    def drops_first(handler, n):
        send(handler, body[: len(body) // 2] if n == 1 else body, length=len(body))

    assert run_download(tmp_path, [serve(drops_first)]) == EXPECTED


def test_a_truncated_download_never_leaves_a_partial_file(tmp_path: Path, tiny_archive: Path, serve) -> None:
    body = tiny_archive.read_bytes()
    url = serve(lambda h, n: send(h, body[:1000], length=len(body)))
    with pytest.raises(DownloadError, match=r"after 1000 of \d+ bytes"):
        run_download(tmp_path, [url], attempts=2)
    assert not list((tmp_path / "raw").glob("*archive*"))


def test_a_truncated_archive_is_refused(tmp_path: Path, tiny_archive: Path, serve) -> None:
    body = tiny_archive.read_bytes()[:-200]
    with pytest.raises(ArchiveError, match="not a readable zip archive"):
        run_download(tmp_path, [serve(lambda h, n: send(h, body))])
    assert not (tmp_path / "raw" / "dataset").exists()


def test_a_wrong_layout_names_the_folder_and_both_counts(tmp_path: Path) -> None:
    root = tmp_path / "src"
    dataset = make_dataset(root)
    next((dataset / "validation" / "dogs").iterdir()).unlink()
    archive = zip_folder(dataset, tmp_path / "a.zip")
    with pytest.raises(ArchiveError, match=r"validation/dogs: expected 8 images, found 7"):
        run_download(tmp_path, [archive.as_uri()], attempts=1)
    assert not (tmp_path / "raw" / "dataset").exists()


def test_a_missing_class_folder_is_named(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "src")
    for path in (dataset / "train" / "cats").iterdir():
        path.unlink()
    (dataset / "train" / "cats").rmdir()
    archive = zip_folder(dataset, tmp_path / "a.zip")
    with pytest.raises(ArchiveError, match=r"train/cats: missing folder"):
        run_download(tmp_path, [archive.as_uri()], attempts=1)


@pytest.mark.parametrize("entry", ["../evil.txt", "cats_and_dogs_filtered/../../evil.txt", "/tmp/evil.txt"])
def test_entries_outside_the_target_are_refused(tmp_path: Path, entry: str) -> None:
    dataset = make_dataset(tmp_path / "src")
    archive = zip_folder(dataset, tmp_path / "a.zip", extra={entry: b"pwned"})
    with pytest.raises(ArchiveError, match="outside the target folder"):
        safe_extract(archive, tmp_path / "out" / "x")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "x").exists()


def test_symbolic_links_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("cats_and_dogs_filtered/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


def test_mirror_path_and_file_url_are_accepted(tmp_path: Path, tiny_archive: Path, monkeypatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tiny_archive))
    assert mirror_source(MIRROR_ENV) == tiny_archive.resolve().as_uri()
    monkeypatch.setenv(MIRROR_ENV, tiny_archive.as_uri())
    counts = run_download(tmp_path, ["http://127.0.0.1:9/never-asked"])
    assert counts == EXPECTED


def test_a_missing_mirror_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "nope.zip"))
    with pytest.raises(DownloadError, match=f"{MIRROR_ENV}=.*nope.zip.*no such file"):
        mirror_source(MIRROR_ENV)


def test_the_pinned_sha256_passes_the_archive_it_names(tmp_path: Path, tiny_archive: Path, serve) -> None:
    url = serve(lambda h, n: send(h, tiny_archive.read_bytes()))
    assert run_download(tmp_path, [url], sha256=sha256_file(tiny_archive).upper()) == EXPECTED


def test_another_archive_with_the_same_layout_fails_naming_both_hashes(
    tmp_path: Path, tiny_archive: Path, serve
) -> None:
    other = zip_folder(make_dataset(tmp_path / "other"), tmp_path / "other.zip", extra={"note.txt": b"not ours"})
    url = serve(lambda h, n: send(h, other.read_bytes()))
    pinned, served = sha256_file(tiny_archive), sha256_file(other)
    with pytest.raises(ChecksumError) as refused:
        run_download(tmp_path, [url], sha256=pinned)
    message = str(refused.value)
    assert message.startswith(f"{url}: the archive's sha256 is {served}, but data.sha256 pins {pinned}")
    assert "`dvc repro download`" in message and f"`sha256: {served}` in conf/data/cats_and_dogs.yaml" in message
    assert not (tmp_path / "raw" / "dataset").exists() and not (tmp_path / "raw" / "extracted").exists()
    assert list((tmp_path / "raw").iterdir()) == []  # nothing extracted, the archive removed


def test_a_mirror_with_another_archive_says_which_copy_to_point_it_at(
    tmp_path: Path, tiny_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tiny_archive))
    pinned = "0" * 64
    with pytest.raises(ChecksumError, match=f"{MIRROR_ENV}={tiny_archive}: the archive's sha256 is") as refused:
        run_download(tmp_path, ["http://127.0.0.1:9/never-asked"], sha256=pinned)
    assert f"point {MIRROR_ENV} at a copy whose sha256 is {pinned}" in str(refused.value)


def test_no_pin_checks_nothing_and_logs_the_hash(
    tmp_path: Path, tiny_archive: Path, serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = serve(lambda h, n: send(h, tiny_archive.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="catdog.data.checksums"):
        assert run_download(tmp_path, [url], sha256=None) == EXPECTED
    assert f"sha256 {sha256_file(tiny_archive)}, not checked (data.sha256 is null)" in caplog.text


def test_the_data_config_pins_the_mirrors_archive() -> None:
    """Where the real archive is at hand (CI's CATDOG_DATA_MIRROR), its sha256 is the one the data config pins."""
    data = compose_config(CONF).data
    mirror = os.environ.get(data.mirror_env)
    if not mirror:
        pytest.skip(f"{data.mirror_env} is not set: no copy of the real archive to hash")
    assert sha256_file(mirror) == data.sha256
