"""cleanlab's Datalab over the images' features: likely label errors (from out-of-fold class probabilities of a
cross-validated logistic regression on the features, so no image is scored by a model that saw its label),
outliers and near-duplicates, each turned into a `Finding` that names its files."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cleanlab import Datalab
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from catdog.audit.findings import File, Finding


def out_of_fold(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's class probabilities from a logistic regression fitted on the other folds."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, features, labels, cv=cv, method="predict_proba")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def datalab_findings(
    files: Sequence[File],
    features: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    near_duplicate_threshold: float,
) -> list[Finding]:
    """Label, outlier and near-duplicate findings: cleanlab decides which images are issues and scores them."""
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    kinds = {"label": {}, "outlier": {}, "near_duplicate": {"threshold": near_duplicate_threshold}}
    lab.find_issues(features=features, pred_probs=probs, issue_types=kinds)
    found: list[Finding] = []
    label = lab.get_issues("label")
    for i in np.flatnonzero(label["is_label_issue"].to_numpy()):
        given, said = classes[labels[i]], classes[int(np.argmax(probs[i]))]
        note = f"labelled {given}; the cross-validated classifier gives {said} {probs[i].max():.3f}"
        found.append(Finding("label", float(label["label_score"].iloc[i]), (files[i],), note))
    outlier = lab.get_issues("outlier")
    for i in np.flatnonzero(outlier["is_outlier_issue"].to_numpy()):
        found.append(Finding("outlier", float(outlier["outlier_score"].iloc[i]), (files[i],), "far from the others"))
    near = lab.get_issues("near_duplicate")
    pairs = {
        (min(i, int(j)), max(i, int(j)))
        for i in np.flatnonzero(near["is_near_duplicate_issue"].to_numpy())
        for j in near["near_duplicate_sets"].iloc[i]
    }
    for i, j in sorted(pairs):
        apart = cosine_distance(features[i], features[j])
        note = f"cosine distance {apart:.4f} between their features"
        found.append(Finding("near_duplicate", apart, (files[i], files[j]), note))
    return found
