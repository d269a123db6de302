"""The comparison's text: the Markdown leaderboard, how the champion was chosen, and the scalars DVC tracks."""

from __future__ import annotations

MAJORITY = "majority-class"
CHOSEN_BY = "best validation accuracy (ties: lower validation loss), never the test split"


def champion_note(champion: str, ranked: list[tuple[str, dict]], val: dict[str, dict]) -> list[str]:
    """How the champion was chosen, and whether the test ranking agrees with that choice."""
    leader, row = next((n, r) for n, r in ranked if n != MAJORITY)
    lines = [
        f"Champion: **{champion}**, chosen by {CHOSEN_BY}: {val[champion]['best_val_accuracy']:.1%} "
        f"(epoch {val[champion]['best_epoch']}). The test split only reports."
    ]
    if leader != champion:
        mine = dict(ranked)[champion]["accuracy"]
        lines.append(
            f"The validation pick is not the test leader: {leader} scored {row['accuracy']:.1%} on test and "
            f"{champion} {mine:.1%}; the champion stays the validation pick, since choosing by test would make "
            "these test numbers optimistic."
        )
    return lines


def leaderboard(
    ranked: list[tuple[str, dict]], tests: list[dict], n_test: int, version: str, champion: str, val: dict[str, dict]
) -> str:
    """The Markdown report: ranking with intervals, per-class scores and which differences are significant."""
    lines = [
        "# Leaderboard (held-out test split)",
        "",
        f"{n_test} test images, data version `{version}`. Accuracy with a 95% Wilson interval; "
        "differences tested pairwise with exact McNemar tests, Holm-adjusted (α = 0.05).",
        "",
        *champion_note(champion, ranked, val),
        "",
        "| rank | model | accuracy | 95% CI | loss | val accuracy | "
        + " | ".join(f"{c} P / R / F1" for c in ranked[0][1]["per_class"])
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(ranked[0][1]["per_class"]),
    ]
    for rank, (name, row) in enumerate(ranked, start=1):
        loss = "–" if row["loss"] is None else f"{row['loss']:.3f}"
        val_accuracy = f"{val[name]['best_val_accuracy']:.1%}" if name in val else "–"
        per_class = " | ".join(
            f"{m['precision']:.2f} / {m['recall']:.2f} / {m['f1']:.2f}" for m in row["per_class"].values()
        )
        lines.append(
            f"| {rank} | {name} | {row['accuracy']:.1%} | {row['ci_low']:.1%} – {row['ci_high']:.1%} | {loss} "
            f"| {val_accuracy} | {per_class} |"
        )
    lines += ["", "## Pairwise McNemar tests", "", "| A | B | only A right | only B right | p | p (Holm) | significant |"]
    lines.append("|---|---|---|---|---|---|---|")
    for t in tests:
        verdict = "yes" if t["significant"] else "no"
        lines.append(
            f"| {t['a']} | {t['b']} | {t['only_a_right']} | {t['only_b_right']} | {t['p_value']:.3g} | {t['p_holm']:.3g} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def dvc_metrics(ranked: list[tuple[str, dict]], val: dict[str, dict]) -> dict[str, dict[str, float | int | None]]:
    """Scalars only, per model, for `dvc metrics diff` and `dvc exp show`."""
    return {
        name: {
            "rank": rank,
            **({"val_accuracy": val[name]["best_val_accuracy"]} if name in val else {}),
            "test_accuracy": row["accuracy"],
            "test_ci_low": row["ci_low"],
            "test_ci_high": row["ci_high"],
            "test_loss": row["loss"],
        }
        for rank, (name, row) in enumerate(ranked, start=1)
    }
