"""What the audit found, as the files it writes: every finding names its kind, its files (path as in the manifests,
split, label) and its score; `reports/audit.json` holds them all, `metrics/audit.json` the counts per kind that
`dvc metrics diff` shows. Light: the report reads these without TensorFlow or cleanlab."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from catdog.common.files import read_json

REPORT = "reports/audit.json"
METRICS = "metrics/audit.json"
# Lower is worse for every kind: cleanlab's scores run from 0 (surely an issue) to 1; a pair's is how far apart the
# two images are (cosine distance of their features, or the share of their perceptual hashes' 64 bits that differ).
KINDS = {
    "label": "likely label error (cleanlab: out-of-fold probabilities of a logistic regression on the features)",
    "outlier": "outlier (cleanlab: far from its nearest neighbours in feature space)",
    "near_duplicate": "near-duplicate pair (cleanlab: features much closer than the typical nearest neighbour)",
    "same_photo": "the same photo twice (perceptual hashes at most a few bits apart)",
}
PAIRS = ("near_duplicate", "same_photo")


@dataclass(frozen=True)
class File:
    path: str
    split: str
    label: str


@dataclass(frozen=True)
class Finding:
    kind: str
    score: float
    files: tuple[File, ...]
    note: str

    @property
    def across_splits(self) -> bool:
        """A pair in two splits: what one model trains on, another split scores it on (leakage)."""
        return len({f.split for f in self.files}) > 1

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "score": round(self.score, 6), "across_splits": self.across_splits}


def counts(findings: Sequence[Finding], images: int, excluded: int) -> dict[str, int]:
    """The metrics: images audited, findings per kind, pairs across splits (leakage), files excluded in params.yaml."""
    per_kind = {kind: sum(f.kind == kind for f in findings) for kind in KINDS}
    leaks = {tuple(sorted(x.path for x in f.files)) for f in findings if f.kind in PAIRS and f.across_splits}
    return {"images": images, **per_kind, "leakage": len(leaks), "excluded": excluded}


def ranked(findings: Sequence[Finding]) -> list[Finding]:
    """Kind by kind (in `KINDS`' order), worst first."""
    order = list(KINDS)
    return sorted(findings, key=lambda f: (order.index(f.kind), f.score, [x.path for x in f.files]))


def read_findings(path: str = REPORT) -> tuple[dict[str, Any], list[Finding]]:
    """The audit's report and its findings, as the audit stage wrote them."""
    report = read_json(path, "audit")
    found = [
        Finding(f["kind"], f["score"], tuple(File(**x) for x in f["files"]), f["note"]) for f in report["findings"]
    ]
    return report, found
