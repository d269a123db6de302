"""The report's result sections, each from what the study already wrote (catdog.report.build gathers it): who won
and is it real, what the variants are and how they trained. The page's order, and every section's title, is
TITLES; the image sections are in catdog.report.image_sections, the data card and provenance in
catdog.report.study_card."""

from __future__ import annotations

from pathlib import Path

from catdog.compare.leaderboard import (
    MAJORITY,
    champion_note,
    dead_note,
    dead_seeds,
    model_cell,
    ranked,
    seed_cells,
    seed_columns,
)
from catdog.compare.machines import machines_note
from catdog.report.html import Cell, Html, Section, image_file, inline_markdown, paragraph, table

TITLES = {
    "leaderboard": "Leaderboard on the held-out test split",
    "mcnemar": "Which differences are real (pairwise McNemar tests)",
    "variants": "What each variant changes from the baseline",
    "curves": "Training curves",
    "confusion": "Confusion matrices",
    "mistakes": "The champion's misclassified test images, with Grad-CAM",
    "correct": "Grad-CAM of correctly classified test images",
    "data": "Data card",
    "augmentation": "Augmentation preview",
    "provenance": "Commit, date, machine and wall time of each stage",
}


def interval(row: dict) -> str:
    return f"{row['accuracy']:.1%} [{row['ci_low'] * 100:.1f}–{row['ci_high'] * 100:.1f}]"


def ranked_models(details: dict) -> list[tuple[str, dict]]:
    """The models best first on test accuracy, as the leaderboard ranks them."""
    return ranked(details["models"])


def pair(details: dict, a: str, b: str) -> dict | None:
    return next((t for t in details["pairwise"] if {t["a"], t["b"]} == {a, b}), None)


def summary(details: dict) -> str:
    """One line from the real numbers: the champion, its interval, the runner-up and whether the gap is real."""
    champion, n = details["champion"], details["n_test"]
    row = details["models"][champion]
    wrong = n - sum(row["confusion_matrix"][i][i] for i in range(len(row["confusion_matrix"])))
    others = [(name, r) for name, r in ranked_models(details) if name not in (champion, MAJORITY)]
    best_other = others[0][1]["accuracy"] if others else -1.0
    verb, label = (
        ("wins", "next")
        if row["accuracy"] > best_other
        else (
            ("ties for first", "tied with")
            if row["accuracy"] == best_other
            else ("is the validation pick", "test leader")
        )
    )
    line = f"{champion} {verb}: {interval(row)} on {n} test images ({wrong} wrong)"
    if others:
        name, other = others[0]
        test = pair(details, champion, name)
        verdict = (
            ""
            if test is None
            else (
                f", {'a significant' if test['significant'] else 'not a significant'} difference "
                f"(McNemar, Holm p = {test['p_holm']:.2g})"
            )
        )
        line += f"; {label}: {name} {interval(other)}{verdict}"
    val = details["validation"][champion]["best_val_accuracy"]
    return line + f"; chosen on validation ({val:.1%}), never on test."


def leaderboard(details: dict, figure: Path) -> Section:
    ranked = ranked_models(details)
    val = details["validation"]
    seeds = details.get("seeds", [None])
    classes = list(ranked[0][1]["per_class"])
    extra, _ = seed_columns(seeds)
    header = [
        "rank",
        "model",
        "accuracy",
        "95% CI",
        "loss",
        "val accuracy",
        *(f"{c} P / R / F1" for c in classes),
        *extra,
    ]
    rows = []
    for rank, (name, row) in enumerate(ranked, start=1):
        rows.append(
            [
                Cell(rank),
                model_cell(name, val),
                Cell(f"{row['accuracy']:.1%}"),
                Cell(f"{row['ci_low']:.1%} – {row['ci_high']:.1%}"),
                Cell("–" if row["loss"] is None else f"{row['loss']:.3f}"),
                Cell(f"{val[name]['best_val_accuracy']:.1%}" if name in val else "–"),
                *(Cell(f"{m['precision']:.2f} / {m['recall']:.2f} / {m['f1']:.2f}") for m in row["per_class"].values()),
                *(Cell(c) for c in seed_cells(row, seeds, dead_seeds(val.get(name)))),
            ]
        )
    notes = [paragraph(inline_markdown(line)) for line in champion_note(details["champion"], ranked, val)]
    intro = paragraph(
        f"{details['n_test']} test images; accuracy with a 95% Wilson interval."
        if len(seeds) == 1
        else f"{details['n_test']} test images; each variant trained with {len(seeds)} seeds: accuracy, loss and per-class "
        "scores are means over seeds, with a 95% Student-t interval over seeds, the sd and each seed's accuracy.",
        "note",
    )
    marks = ["champion" if name == details["champion"] else "" for name, _ in ranked]
    dead = [paragraph(inline_markdown(line), "note") for line in dead_note(val)]
    machines = [paragraph(inline_markdown(line), "note") for line in compared_machines(details)]
    return Section(
        "leaderboard",
        TITLES["leaderboard"],
        [*notes, intro, table(header, rows, marks), *machines, *dead, image_file(figure, "test accuracy")],
    )


def compared_machines(details: dict) -> list[str]:
    """The leaderboard's line on where the runs trained, from compare.json (none in one written before it)."""
    words = details.get("machines", {})
    runs = {
        run: {"id": r["machine_id"], "words": words[r["machine_id"]]}
        for run, r in details.get("runs", {}).items()
        if "machine_id" in r
    }
    return machines_note(runs) if runs else []


def mcnemar(details: dict) -> Section:
    header = ["A", "B", "only A right", "only B right", "p", "p (Holm)", "significant (α = 0.05)"]
    rows = [
        [
            t["a"],
            t["b"],
            Cell(t["only_a_right"]),
            Cell(t["only_b_right"]),
            Cell(f"{t['p_value']:.3g}"),
            Cell(f"{t['p_holm']:.3g}"),
            "yes" if t["significant"] else "no",
        ]
        for t in details["pairwise"]
    ]
    several = len(details.get("seeds", [None])) > 1
    note = paragraph(
        "Exact McNemar tests on the images where exactly one of the two models is right, Holm-adjusted "
        "over all pairs" + (", between each variant's best-validation seed." if several else "."),
        "note",
    )
    return Section("mcnemar", TITLES["mcnemar"], [note, table(header, rows)])


def variants(differences: list[tuple[str, list[str]]], names: list[str], reference: str) -> Section:
    ref = names.index(reference)
    rows = [
        [
            Html(f"<code>{key}</code>"),
            *(Cell(v, "" if i == ref or v != values[ref] else "same") for i, v in enumerate(values)),
        ]
        for key, values in differences
    ]
    note = paragraph(
        f"The settings each training run logged to MLflow that differ between the variants; grey: the same "
        f"as {reference}, –: the variant has no such setting. Every other setting is the same for all.",
        "note",
    )
    return Section("variants", TITLES["variants"], [note, table(["setting", *names], rows)])


def curves(overview: Path, per_variant: dict[str, Path], metrics: dict[str, dict], seeds: dict[str, int]) -> Section:
    """Each variant's curves; `seeds` names the seed shown where the study trained several (its best on val)."""
    parts: list[object] = [image_file(overview, "validation accuracy of every variant per epoch")]
    for name, path in per_variant.items():
        m = metrics[name]
        which = f" (seed {seeds[name]}, its best-validation run)" if name in seeds else ""
        parts.append(
            paragraph(
                Html(
                    f"<strong>{name}</strong>{which}: {m['epochs_run']} epochs, best val accuracy {m['best_val_accuracy']:.1%} "
                    f"at epoch {m['best_epoch']} (its weights are the saved model)"
                )
            )
        )
        parts.append(image_file(path, f"{name}: training curves"))
    return Section("curves", TITLES["curves"], parts)


def confusion(figure: Path) -> Section:
    note = paragraph("Rows: true class; columns: predicted class; on the test split.", "note")
    return Section("confusion", TITLES["confusion"], [note, image_file(figure, "confusion matrices")])
