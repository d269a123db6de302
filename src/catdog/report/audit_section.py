"""The report's section on the data audit (`reports/audit.json`, written by the audit stage, `catdog.audit`): the
counts per kind, the files params.yaml excludes, and the worst findings of each kind with thumbnails of their
images, drawn from the data set as the champion's mistakes are, into the page itself."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps

from catdog.audit.findings import KINDS, PAIRS, Finding
from catdog.common.machine import words as machine_words
from catdog.report.html import Cell, Html, Section, card, cards, image, inline_markdown, paragraph, table

ANCHOR = "audit"
TITLE = "Data audit: near-duplicates, likely label errors, outliers"
SHOWN = 8  # findings of each kind with thumbnails; reports/audit.json holds them all
THUMBNAIL = 164  # px, the cards' image size (catdog.report.html.STYLE)


def thumbnail(path: Path) -> Html:
    """The image upright (EXIF), fitted into the card's square, as a small JPEG."""
    out = io.BytesIO()
    with Image.open(path) as picture:
        small = ImageOps.exif_transpose(picture).convert("RGB")
        small.thumbnail((THUMBNAIL, THUMBNAIL))
        small.save(out, "JPEG", quality=80)
    return image(out.getvalue(), "image/jpeg", path.name, "photo")


def finding_card(finding: Finding, dataset_dir: Path) -> Html:
    files = [f"{f.path} ({f.split}, {f.label})" for f in finding.files]
    leak = ["in two splits: leakage"] if finding.kind in PAIRS and finding.across_splits else []
    caption = [*files, f"score {finding.score:.4f}", finding.note, *leak]
    return card([thumbnail(dataset_dir / f.path) for f in finding.files], caption)


def counts_table(counts: dict[str, int], findings: Sequence[Finding]) -> Html:
    rows = []
    for kind, what in KINDS.items():
        across = sum(f.across_splits for f in findings if f.kind == kind) if kind in PAIRS else "–"
        rows.append([Html(f"<code>{kind}</code>"), what, Cell(counts[kind]), Cell(across)])
    return table(["kind", "what it is", "found", "of them across splits"], rows)


def audit(dataset_dir: Path, report: dict, findings: Sequence[Finding], shown: int = SHOWN) -> Section:
    """The section from the audit's report and findings (`catdog.audit.findings.read_findings`)."""
    counts = report["counts"]
    intro = (
        f"The audit stage looked at all {counts['images']} images of the split (train, val and test) through "
        f"`{report['settings']['backbone']['weights'] or 'random'}` MobileNetV2 features; a logistic regression on "
        f"them, cross-validated, classifies {100 * report['classifier_accuracy']:.1f}% right. A finding changes "
        f"nothing: a file leaves the study only when params.yaml's `data.exclude` names it. It took "
        f"{report['seconds']:.0f} s on {machine_words(report['machine'])}."
    )
    parts: list[object] = [paragraph(inline_markdown(intro)), counts_table(counts, findings)]
    excluded = report["excluded"]
    if excluded:
        parts += [
            paragraph(f"{len(excluded)} files excluded:"),
            table(["path", "reason"], [[x["path"], x["reason"]] for x in excluded]),
        ]
    else:
        parts.append(paragraph(inline_markdown("No file is excluded (params.yaml's `data.exclude` is empty).")))
    for kind in KINDS:
        of_kind = [f for f in findings if f.kind == kind]
        if of_kind:
            head = f"{kind}: the {min(shown, len(of_kind))} lowest scores of {len(of_kind)}, worst first"
            parts += [
                paragraph(Html(f"<strong>{head}</strong>")),
                cards([finding_card(f, dataset_dir) for f in of_kind[:shown]]),
            ]
    return Section(ANCHOR, TITLE, parts)
