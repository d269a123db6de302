"""Fetch the image archive (or a local mirror of it), extract it safely, check its layout and its images' content."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from catdog.common.errors import UserError
from catdog.common.files import CHUNK_BYTES, atomic_path
from catdog.data.checksums import DataPin, check_content, check_sha256

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


AGAIN = "then run `dvc repro download` (or `python src/download.py`) again"


class DownloadError(UserError, RuntimeError):
    """The archive could not be fetched from any source."""

    kind = "download error"


class ArchiveError(UserError, RuntimeError):
    """The archive is damaged, unsafe, or does not hold the expected layout."""

    kind = "download error"


def mirror_source(env_var: str) -> str | None:
    """The local mirror named by `env_var` as a URL, or None when unset."""
    value = os.environ.get(env_var, "").strip()
    if not value:
        return None
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise DownloadError(
            f"{env_var}={value!r}: no such file; point it at a copy of the archive (a path or file:// URL)"
        )
    return path.as_uri()


def fetch(url: str, target: Path, *, timeout_s: float) -> None:
    """Copy `url` to `target` with a progress bar; `target` appears only when the copy is complete."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(target) as tmp:
        expected = int(response.headers.get("Content-Length") or 0)
        received = 0
        with (
            open(tmp, "wb") as out,
            tqdm(total=expected or None, unit="B", unit_scale=True, desc=target.name, disable=None) as bar,
        ):
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if expected and received != expected:
            raise DownloadError(f"{url}: connection closed after {received} of {expected} bytes")


def fetch_with_retries(urls: Sequence[str], target: Path, *, attempts: int, backoff_s: float, timeout_s: float) -> str:
    """Try each URL in turn, retrying transient failures with exponential backoff; return the URL that worked."""
    errors: list[str] = []
    for url in urls:
        for attempt in range(1, attempts + 1):
            try:
                fetch(url, target, timeout_s=timeout_s)
                return url
            except urllib.error.HTTPError as exc:
                errors.append(f"{url} (attempt {attempt}): HTTP {exc.code} {exc.reason}")
                if exc.code < 500 and exc.code != 429:
                    break
            except (urllib.error.URLError, OSError, DownloadError) as exc:
                errors.append(f"{url} (attempt {attempt}): {exc}")
            if attempt < attempts:
                delay = backoff_s * 2 ** (attempt - 1)
                log.warning("download failed (%s); retrying in %.1f s", errors[-1], delay)
                time.sleep(delay)
    raise DownloadError("could not download the archive:\n  " + "\n  ".join(errors))


def _check_member(info: zipfile.ZipInfo, archive: Path) -> None:
    name = PurePosixPath(info.filename)
    if name.is_absolute() or ".." in name.parts or ":" in info.filename.split("/")[0]:
        raise ArchiveError(f"{archive}: refusing entry {info.filename!r}, which would land outside the target folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{archive}: refusing entry {info.filename!r}, which is a symbolic link")


def safe_extract(archive: Path, target: Path) -> None:
    """Extract `archive` into `target`, refusing absolute paths, `..` entries and links; all or nothing."""
    staging = target.with_name(f".{target.name}.extracting")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(info, archive)
            for info in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=None):
                zf.extract(info, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"{archive}: not a readable zip archive ({exc})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_layout(dataset_dir: Path, expected: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Check every expected `<split>/<class>` folder holds the expected number of images; return the counts."""
    counts: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for split, classes in expected.items():
        counts[split] = {}
        for cls, want in classes.items():
            folder = dataset_dir / split / cls
            if not folder.is_dir():
                problems.append(f"{folder}: missing folder (expected {want} images)")
                continue
            got = count_images(folder)
            counts[split][cls] = got
            if got != want:
                problems.append(f"{folder}: expected {want} images, found {got}")
    if problems:
        raise ArchiveError("the data set does not have the expected layout:\n  " + "\n  ".join(problems))
    return counts


def find_dataset_root(extracted: Path, expected: Mapping[str, object]) -> Path:
    """The folder inside the extraction that holds the expected split folders (the archive may nest one level)."""
    first_split = next(iter(expected))
    candidates = [extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / first_split).is_dir():
            return candidate
    raise ArchiveError(f"{extracted}: no folder '{first_split}/' found in the archive; is this the right archive?")


def download_dataset(
    urls: Sequence[str],
    mirror_env: str,
    raw_dir: Path,
    dataset_dir: Path,
    expected: Mapping[str, Mapping[str, int]],
    *,
    pin: DataPin,
    attempts: int,
    backoff_s: float,
    timeout_s: float,
) -> dict[str, dict[str, int]]:
    """Fetch (or mirror) the archive, check its sha256 where `pin` names one, extract it, check the data set's layout
    and its images' content hash (`catdog.data.checksums`) into `dataset_dir`; return per-folder image counts."""
    mirror = mirror_source(mirror_env)
    sources = [mirror] if mirror else list(urls)
    archive = raw_dir / "archive.zip"
    try:
        used = fetch_with_retries(sources, archive, attempts=attempts, backoff_s=backoff_s, timeout_s=timeout_s)
    except DownloadError as exc:
        if mirror:
            raise
        raise DownloadError(f"{exc}; check the network, or point {mirror_env} at a local copy of the archive") from exc
    log.info("fetched %s", used)
    source = f"{mirror_env}={os.environ.get(mirror_env, '').strip()}" if mirror else used
    extracted = raw_dir / "extracted"
    try:
        check_sha256(archive, pin.archive_sha256, source, fix_checksum(mirror_env, mirror, pin.archive_sha256))
        safe_extract(archive, extracted)
        root = find_dataset_root(extracted, expected)
        counts = check_layout(root, expected)
        fix_content = fix(mirror_env, mirror, urls) if mirror else f"the server sent other images: {AGAIN}"
        check_content(root, expected, pin.content_sha256, pin.content_list, source=source, fix=fix_content)
        shutil.rmtree(dataset_dir, ignore_errors=True)
        root.rename(dataset_dir)
    except ArchiveError as exc:
        detail = str(exc).removeprefix(f"{archive}: ")  # a copy of `source`, already gone
        raise ArchiveError(f"{source}: {detail}; {fix(mirror_env, mirror, urls)}") from exc
    finally:
        shutil.rmtree(extracted, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return counts


def fix(mirror_env: str, mirror: str | None, urls: Sequence[str]) -> str:
    """What to do about a bad archive: point the mirror at a copy of the real one, or download again."""
    if mirror:
        name = PurePosixPath(urllib.parse.urlsplit(urls[0]).path).name if urls else "the archive"
        return f"point {mirror_env} at a copy of {name} (or unset it to download the archive), {AGAIN}"
    return f"the download may be damaged: {AGAIN}"


def fix_checksum(mirror_env: str, mirror: str | None, pinned: str | None) -> str:
    """What to do about an archive whose sha256 is not the pinned one."""
    if mirror:
        return f"point {mirror_env} at a copy whose sha256 is {pinned} (or unset it to download the archive), {AGAIN}"
    return (
        f"the download may be damaged, or the server sent another archive: point {mirror_env} at a checked copy, "
        f"{AGAIN}"
    )
