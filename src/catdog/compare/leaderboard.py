"""The comparison's text: the Markdown leaderboard, how the champion was chosen, and the scalars DVC tracks."""

from __future__ import annotations

from catdog.train.dead_runs import WHAT as DEAD_WHAT

MAJORITY = "majority-class"
CHOSEN_BY = "best validation accuracy (ties: lower validation loss), never the test split"
CHOSEN_BY_MEAN = (
    "best mean validation accuracy over training seeds (ties: lower mean validation loss), never the test split"
)


def ranked(models: dict[str, dict]) -> list[tuple[str, dict]]:
    """The models (and the majority-class guess) by test accuracy, best first: the order of every leaderboard, the
    Markdown one here and the report's."""
    return sorted(models.items(), key=lambda item: -item[1]["accuracy"])


def chosen_by(n_seeds: int) -> str:
    """How the champion is picked: on val accuracy, averaged over seeds where there are several."""
    return CHOSEN_BY if n_seeds == 1 else CHOSEN_BY_MEAN


def champion_note(champion: str, ranked: list[tuple[str, dict]], val: dict[str, dict]) -> list[str]:
    """How the champion was chosen, and whether the test ranking agrees with that choice."""
    leader, row = next((n, r) for n, r in ranked if n != MAJORITY)
    mine = val[champion]
    n_seeds = len(mine.get("per_seed", [None]))
    if n_seeds == 1:
        picked = f"{mine['best_val_accuracy']:.1%} (epoch {mine['best_epoch']})"
    else:
        best = mine["per_seed"][str(mine["seed"])]
        picked = (
            f"{mine['best_val_accuracy']:.1%}, the mean of {n_seeds} seeds; the registered model is its seed "
            f"{mine['seed']} run, the best on validation ({best:.1%}, epoch {mine['best_epoch']})"
        )
    lines = [f"Champion: **{champion}**, chosen by {chosen_by(n_seeds)}: {picked}. The test split only reports."]
    if leader != champion:
        theirs = dict(ranked)[champion]["accuracy"]
        lines.append(
            f"The validation pick is not the test leader: {leader} scored {row['accuracy']:.1%} on test and "
            f"{champion} {theirs:.1%}; the champion stays the validation pick, since choosing by test would make "
            "these test numbers optimistic."
        )
    return lines


def seed_columns(seeds: list[int]) -> tuple[list[str], list[str]]:
    """The extra header cells (and separators) for a study over several seeds: sd and each seed's accuracy."""
    if len(seeds) == 1:
        return [], []
    names = ["sd", *(f"seed {s}" for s in seeds)]
    return names, ["---"] * len(names)


def seed_cells(row: dict, seeds: list[int], dead: list[int] | None = None) -> list[str]:
    """The sd and each seed's accuracy, a seed whose run did not learn marked."""
    if len(seeds) == 1:
        return []
    per_seed = row.get("per_seed")
    if per_seed is None:  # the majority-class guess: no seeds
        return ["–"] * (len(seeds) + 1)
    marked = set(dead or [])
    return [f"{row['sd']:.1%}", *(f"{per_seed[str(s)]:.1%}{DEAD_MARK if s in marked else ''}" for s in seeds)]


DEAD_MARK = " †"


def dead_seeds(val_row: dict | None) -> list[int]:
    """The seeds of a variant whose run did not learn (none for the majority-class guess)."""
    return list((val_row or {}).get("did_not_learn", []))


def model_cell(name: str, val: dict[str, dict]) -> str:
    """The model's name, marked when any of its runs did not learn."""
    return name + (DEAD_MARK if dead_seeds(val.get(name)) else "")


def dead_note(val: dict[str, dict]) -> list[str]:
    """One line naming every run that did not learn, or none: its scores count as they are, named, not hidden."""
    runs = [f"{name} seed {seed}" for name, row in val.items() for seed in dead_seeds(row)]
    if not runs:
        return []
    return [f"† Did not learn ({DEAD_WHAT}): {', '.join(runs)}; its scores count as they are."]


def intro(n_test: int, version: str, seeds: list[int]) -> str:
    if len(seeds) == 1:
        return (
            f"{n_test} test images, data version `{version}`. Accuracy with a 95% Wilson interval; "
            "differences tested pairwise with exact McNemar tests, Holm-adjusted (α = 0.05)."
        )
    return (
        f"{n_test} test images, data version `{version}`, each variant trained with {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}). Accuracy, loss and per-class scores are means over seeds, with the "
        "standard deviation, a 95% Student-t interval for the mean over seeds and each seed's test accuracy; val "
        "accuracy is the mean of each seed's best. Differences are tested pairwise with exact McNemar tests "
        "(Holm-adjusted, α = 0.05) between each variant's best-validation seed."
    )


def leaderboard(
    ranked: list[tuple[str, dict]],
    tests: list[dict],
    n_test: int,
    version: str,
    champion: str,
    val: dict[str, dict],
    seeds: list[int] | None = None,
    machines: list[str] | None = None,
) -> str:
    """The Markdown report: ranking with intervals, per-class scores and which differences are significant; over
    several seeds, means with their spread and each seed's score; `machines`: the line naming where the runs
    trained (catdog.compare.machines)."""
    seeds = seeds or [0]
    extra, separators = seed_columns(seeds)
    lines = [
        "# Leaderboard (held-out test split)",
        "",
        intro(n_test, version, seeds),
        "",
        *champion_note(champion, ranked, val),
        "",
        "| rank | model | accuracy | 95% CI | loss | val accuracy | "
        + " | ".join([*(f"{c} P / R / F1" for c in ranked[0][1]["per_class"]), *extra])
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(ranked[0][1]["per_class"]) + "".join(f"{s}|" for s in separators),
    ]
    for rank, (name, row) in enumerate(ranked, start=1):
        loss = "–" if row["loss"] is None else f"{row['loss']:.3f}"
        val_accuracy = f"{val[name]['best_val_accuracy']:.1%}" if name in val else "–"
        cells = [f"{m['precision']:.2f} / {m['recall']:.2f} / {m['f1']:.2f}" for m in row["per_class"].values()]
        lines.append(
            f"| {rank} | {model_cell(name, val)} | {row['accuracy']:.1%} | {row['ci_low']:.1%} – {row['ci_high']:.1%} | {loss} "
            f"| {val_accuracy} | {' | '.join([*cells, *seed_cells(row, seeds, dead_seeds(val.get(name)))])} |"
        )
    dead = dead_note(val)
    lines += [
        *(["", *machines] if machines else []),
        *(["", *dead] if dead else []),
        "",
        "## Pairwise McNemar tests",
        "",
        "| A | B | only A right | only B right | p | p (Holm) | significant |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for t in tests:
        verdict = "yes" if t["significant"] else "no"
        lines.append(
            f"| {t['a']} | {t['b']} | {t['only_a_right']} | {t['only_b_right']} | {t['p_value']:.3g} | {t['p_holm']:.3g} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def dvc_metrics(ranked: list[tuple[str, dict]], val: dict[str, dict]) -> dict[str, dict[str, float | int | None]]:
    """Scalars only, per model, for `dvc metrics diff` and `dvc exp show`; over several seeds, the means (and their
    interval over seeds), the sd and each seed's test accuracy."""
    return {
        name: {
            "rank": rank,
            **({"val_accuracy": val[name]["best_val_accuracy"]} if name in val else {}),
            "test_accuracy": row["accuracy"],
            "test_ci_low": row["ci_low"],
            "test_ci_high": row["ci_high"],
            "test_loss": row["loss"],
            **({"test_accuracy_sd": row["sd"]} if "per_seed" in row else {}),
            **{f"test_accuracy_seed_{s}": a for s, a in row.get("per_seed", {}).items()},
        }
        for rank, (name, row) in enumerate(ranked, start=1)
    }
