"""The report's sections of images: where and why the champion goes wrong (Grad-CAM of its mistakes and of a few
right answers), and what augmentation does to a train image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from catdog.report.explanations import Explained, Explanations
from catdog.report.html import Html, Section, card, cards, image, image_file, inline_markdown, paragraph
from catdog.report.sections import TITLES


def explained_cards(items: Sequence[Explained]) -> Html:
    return cards(
        [
            card(
                [
                    image(e.image, "image/jpeg", f"{e.path}", "photo"),
                    image(e.overlay, "image/jpeg", f"{e.path}: Grad-CAM", "photo"),
                ],
                [e.path, f"true {e.true} → predicted {e.predicted}", f"probability {e.probability:.3f}"],
            )
            for e in items
        ]
    )


def mistakes(ex: Explanations, cap: int) -> Section:
    shown = len(ex.misclassified)
    count = f"{ex.variant} got {ex.wrong_total} of {ex.n_test} test images wrong"
    count += (
        f"; all {shown} are shown."
        if shown == ex.wrong_total
        else f"; the first {shown} (manifest order) are shown, capped at {cap}."
    )
    how = (
        f"Each image at the model's input size ({ex.image_size} px) beside its Grad-CAM for the predicted class (the "
        f"gradient of that class's logit at the output of `{ex.target}`): red is where the evidence for the wrong answer was."
    )
    parts = [paragraph(count), paragraph(inline_markdown(how), "note")]
    return Section(
        "mistakes", TITLES["mistakes"], [*parts, explained_cards(ex.misclassified) if shown else paragraph("None.")]
    )


def correct(ex: Explanations, per_class: int) -> Section:
    note = paragraph(
        f"The first {per_class} right answers of each class (manifest order), Grad-CAM for the predicted class.", "note"
    )
    return Section("correct", TITLES["correct"], [note, explained_cards(ex.correct)])


def augmentation(previews: dict[str, Path]) -> Section:
    parts: list[object] = [
        paragraph(
            "What training sees: each variant's augmentation (random flip and rotation, inside the "
            "model) applied to train images.",
            "note",
        )
    ]
    for name, path in previews.items():
        parts += [
            paragraph(Html(f"<strong>{name}</strong>")),
            image_file(path, f"{name}: augmentation preview", photo=True),
        ]
    if not previews:
        parts.append(paragraph("No variant augments its images."))
    return Section("augmentation", TITLES["augmentation"], parts)
