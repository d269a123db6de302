"""The audit stage: every image of the split's manifests (train, val and test) embedded by the frozen backbone, checked
by cleanlab (label errors, outliers, near-duplicates) and by perceptual hash (the same photo twice), written to
`reports/audit.json` and `metrics/audit.json`. It changes no data: `data.exclude` in params.yaml does, in the split."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from catdog.audit import photos
from catdog.audit.embeddings import backbone, embed_split
from catdog.audit.findings import KINDS, METRICS, REPORT, File, Finding, counts, ranked
from catdog.audit.issues import datalab_findings, out_of_fold
from catdog.common.files import write_json
from catdog.common.machine import fingerprint
from catdog.data.manifests import SPLITS, data_version


def same_photos(cfg: DictConfig, files: list[File]) -> list[Finding]:
    hashes = photos.phashes(Path(cfg.data.dataset_dir), [f.path for f in files])
    return [
        Finding("same_photo", bits / 64, (files[i], files[j]), f"perceptual hashes {bits} of 64 bits apart")
        for i, j, bits in photos.close_pairs(hashes, cfg.audit.phash_max_bits)
    ]


def embedded(cfg: DictConfig) -> tuple[list[File], np.ndarray]:
    """Every manifest's files, in split order, and their features (one backbone built only if a split needs it)."""
    settings = cfg.audit
    net = functools.cache(
        lambda: backbone(settings.backbone.alpha, settings.backbone.weights, settings.image_size, settings.seed)
    )
    files: list[File] = []
    parts = []
    for name in SPLITS:
        entries, features = embed_split(cfg.data, cfg.audit, name, net)
        files += [File(e.path, name, e.label) for e in entries]
        parts.append(features)
    return files, np.concatenate(parts)


def audit(cfg: DictConfig) -> dict[str, Any]:
    """Run the audit and write its files; return its metrics."""
    clock = time.monotonic()
    files, features = embedded(cfg)
    classes = list(cfg.data.classes)
    labels = np.array([classes.index(f.label) for f in files])
    probs = out_of_fold(features, labels, cfg.audit.folds, cfg.audit.seed)
    found = datalab_findings(files, features, labels, probs, classes, cfg.audit.near_duplicate_threshold)
    found = ranked(found + same_photos(cfg, files))
    excluded = [{"path": x["path"], "reason": x["reason"]} for x in cfg.data.exclude]
    metrics = counts(found, len(files), len(excluded))
    report = {
        "data_version": data_version(Path(cfg.data.split_dir)),
        "machine": fingerprint(),
        "seconds": round(time.monotonic() - clock, 1),
        "settings": OmegaConf.to_container(cfg.audit, resolve=True),
        "kinds": KINDS,
        "counts": metrics,
        "classifier_accuracy": round(float(np.mean(probs.argmax(axis=1) == labels)), 4),
        "excluded": excluded,
        "findings": [f.as_dict() for f in found],
    }
    write_json(REPORT, report)
    write_json(METRICS, metrics)
    return metrics
