"""The download stage: real HTTP from a loopback server, retries, truncation, unsafe archives, wrong layouts, the
images' content pin (any packing of the same images passes, a changed, missing or extra image is named) and the
optional archive pin."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import random
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CLASS_COLOURS, CONF, TINY_COUNTS, jpeg_bytes, make_dataset, zip_folder
from omegaconf import OmegaConf

from catdog.common.files import sha256_file
from catdog.data.checksums import ChecksumError, ContentError, DataPin, content_pairs
from catdog.data.download import ArchiveError, DownloadError, download_dataset, mirror_source, safe_extract
from catdog.data.manifests import content_hash, listing
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


def run_download(
    tmp_path: Path, urls: list[str], attempts: int = 3, sha256: str | None = None, content: DataPin | None = None
) -> dict:
    """Download into tmp_path/raw; `sha256` pins the archive and `content` the images (None: neither is pinned)."""
    pin = content or DataPin(None, tmp_path / "no-listing.sha256")
    return download_dataset(
        urls,
        MIRROR_ENV,
        tmp_path / "raw",
        tmp_path / "raw" / "dataset",
        EXPECTED,
        pin=DataPin(pin.content_sha256, pin.content_list, sha256),
        attempts=attempts,
        backoff_s=0.01,
        timeout_s=5,
    )


def pin_images(dataset: Path, listing_file: Path) -> DataPin:
    """The content pin of `dataset`'s images, their listing written to `listing_file` (as the project commits it)."""
    pairs = content_pairs(dataset, EXPECTED)
    listing_file.write_text(listing(pairs))
    return DataPin(content_hash(pairs), listing_file)


def repack(dataset: Path, archive: Path) -> Path:
    """The images of `dataset` zipped as Google's original differs from the offline copy: compressed, in another entry
    order, with other timestamps, and with a helper script beside the class folders."""
    files = sorted(p for p in dataset.rglob("*") if p.is_file())
    random.Random(0).shuffle(files)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{dataset.name}/vectorize.py", "print('not an image')\n")
        for n, path in enumerate(files):
            info = zipfile.ZipInfo(path.relative_to(dataset.parent).as_posix(), (2019, 3, 1 + n % 28, 12, n % 60, 0))
            zf.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return archive


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
    assert message.startswith(f"{url}: the archive's sha256 is {served}, but data.archive_sha256 pins {pinned}")
    assert (
        "`dvc repro download`" in message and f"`archive_sha256: {served}` in conf/data/cats_and_dogs.yaml" in message
    )
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


def test_no_pin_checks_nothing_and_logs_both_hashes(
    tmp_path: Path, tiny_archive: Path, serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = serve(lambda h, n: send(h, tiny_archive.read_bytes()))
    with caplog.at_level(logging.INFO, logger="catdog.data.checksums"):
        assert run_download(tmp_path, [url], sha256=None) == EXPECTED
    images = content_hash(content_pairs(tmp_path / "raw" / "dataset", EXPECTED))
    assert f"archive sha256 {sha256_file(tiny_archive)}, not checked (data.archive_sha256 is null)" in caplog.text
    assert f"content hash {images}, not checked (data.content_sha256 is null)" in caplog.text


def test_any_packing_of_the_same_images_passes_the_content_pin(tmp_path: Path) -> None:
    """The offline copy's packing (stored, sorted, one timestamp) and Google's (compressed, another order and
    timestamps, plus vectorize.py beside the class folders): two archives, one pin."""
    dataset = make_dataset(tmp_path / "src")
    pin = pin_images(dataset, tmp_path / "pinned.sha256")
    stored = zip_folder(dataset, tmp_path / "stored.zip")
    deflated = repack(dataset, tmp_path / "deflated.zip")
    assert sha256_file(stored) != sha256_file(deflated)
    with zipfile.ZipFile(deflated) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert "cats_and_dogs_filtered/vectorize.py" in zf.namelist()
    for n, archive in enumerate((stored, deflated)):
        assert run_download(tmp_path / f"run{n}", [archive.as_uri()], attempts=1, content=pin) == EXPECTED


def test_a_changed_image_is_named(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "src")
    pin = pin_images(dataset, tmp_path / "pinned.sha256")
    (dataset / "train" / "dogs" / "dog.train3.jpg").write_bytes(jpeg_bytes((0, 0, 0), seed=99))
    archive = zip_folder(dataset, tmp_path / "a.zip")
    with pytest.raises(ContentError) as refused:
        run_download(tmp_path, [archive.as_uri()], attempts=1, content=pin)
    message = refused.value.line()
    assert message.startswith(
        f"data error: {archive.as_uri()}: the images are not the ones data.content_sha256 pins: "
        "1 changed (train/dogs/dog.train3.jpg); the server sent other images"
    ), message
    assert f"pin them (hash {content_hash(content_pairs(dataset, EXPECTED))};" in message
    assert "\n" not in str(refused.value)
    assert list((tmp_path / "raw").iterdir()) == []  # nothing kept: no data set, no archive


def test_missing_and_extra_images_are_named_a_few_then_counted(tmp_path: Path) -> None:
    """Renamed images keep the layout's counts: only the content pin sees them."""
    dataset = make_dataset(tmp_path / "src")
    pin = pin_images(dataset, tmp_path / "pinned.sha256")
    for i in range(4):
        old = dataset / "validation" / "cats" / f"cat.validation{i}.jpg"
        old.rename(old.with_name(f"cat.new{i}.jpg"))
    archive = zip_folder(dataset, tmp_path / "a.zip")
    with pytest.raises(ContentError) as refused:
        run_download(tmp_path, [archive.as_uri()], attempts=1, content=pin)
    missing = ", ".join(f"validation/cats/cat.validation{i}.jpg" for i in range(3))
    extra = ", ".join(f"validation/cats/cat.new{i}.jpg" for i in range(3))
    assert f"pins: 4 missing ({missing} and 1 more), 4 extra ({extra} and 1 more);" in str(refused.value)


def test_a_listing_that_is_not_the_pinned_one_says_to_restore_it(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "src")
    pin = pin_images(dataset, tmp_path / "pinned.sha256")
    pin.content_list.write_text(pin.content_list.read_text().replace("train/cats", "train/kats", 1))
    (dataset / "train" / "cats" / "cat.train0.jpg").write_bytes(jpeg_bytes((0, 0, 0), seed=99))
    archive = zip_folder(dataset, tmp_path / "a.zip")
    with pytest.raises(ContentError, match=f"{pin.content_list}, which names the pinned images, is missing or not"):
        run_download(tmp_path, [archive.as_uri()], attempts=1, content=pin)


def test_the_pinned_listing_is_the_pinned_content_hash() -> None:
    """The listing the project commits is the one whose hash the data config pins, so a refusal names real files."""
    data = compose_config(CONF).data
    pinned = (CONF.parent / data.content_list).read_text()
    assert len(pinned.splitlines()) == sum(sum(classes.values()) for classes in data.expected.values())
    assert content_hash(line.split("  ")[::-1] for line in pinned.splitlines()) == data.content_sha256
    assert data.archive_sha256 is None


def real_mirror() -> Path:
    mirror = os.environ.get(compose_config(CONF).data.mirror_env)
    if not mirror:
        pytest.skip("CATDOG_DATA_MIRROR is not set: no copy of the real archive")
    return Path(mirror)


def test_the_data_config_pins_the_mirrors_images() -> None:
    """Where the real archive is at hand (CI's CATDOG_DATA_MIRROR), its 3,000 images are the ones the config pins."""
    data = compose_config(CONF).data
    with zipfile.ZipFile(real_mirror()) as zf:
        root = f"{Path(data.dataset_dir).name}/"
        pairs = [
            (i.filename.removeprefix(root), hashlib.sha256(zf.read(i)).hexdigest())
            for i in zf.infolist()
            if not i.is_dir()
        ]
    assert len(pairs) == 3000 and content_hash(pairs) == data.content_sha256


@pytest.mark.slow
def test_googles_packing_of_the_real_images_passes(tmp_path: Path) -> None:
    """The real images repacked as Google's original differs from the offline copy (deflated, another order and
    timestamps, vectorize.py) pass the download with the data config's own pins."""
    with zipfile.ZipFile(real_mirror()) as zf:
        zf.extractall(tmp_path / "src")
    data = compose_config(CONF).data
    archive = repack(tmp_path / "src" / Path(data.dataset_dir).name, tmp_path / "google.zip")
    counts = download_dataset(
        [archive.as_uri()],
        MIRROR_ENV,
        tmp_path / "raw",
        tmp_path / "raw" / "dataset",
        data.expected,
        pin=DataPin(data.content_sha256, CONF.parent / data.content_list, data.archive_sha256),
        attempts=1,
        backoff_s=0.01,
        timeout_s=5,
    )
    assert counts == OmegaConf.to_container(data.expected)
