"""The downloaded archive's content, checked against the sha256 pinned in the data config (`data.sha256`) before
anything in it is extracted: the layout check alone passes any archive with the right folders and counts."""

from __future__ import annotations

import logging
from pathlib import Path

from catdog.common.errors import UserError
from catdog.common.files import sha256_file

log = logging.getLogger(__name__)
SETTING = "data.sha256"
CONF_FILE = "conf/data/cats_and_dogs.yaml"


class ChecksumError(UserError, RuntimeError):
    """The archive's sha256 is not the pinned one: the message names both hashes and what to do."""

    kind = "download error"


def check_sha256(archive: Path, pinned: str | None, source: str, fix: str) -> str:
    """The sha256 of `archive` (fetched from `source`), refused unless it is `pinned`; None pins nothing (the hash
    is logged, to be pinned). `fix` says what to do about another archive, before the way to trust it."""
    actual = sha256_file(archive)
    if pinned is None:
        log.warning("%s: sha256 %s, not checked (%s is null)", source, actual, SETTING)
        return actual
    if actual != pinned.lower():
        trust = f"if you trust this archive, pin its hash instead (`sha256: {actual}` in {CONF_FILE})"
        raise ChecksumError(
            f"{source}: the archive's sha256 is {actual}, but {SETTING} pins {pinned.lower()}: this is not the "
            f"archive the study was made with; {fix}; or, {trust}"
        )
    return actual
