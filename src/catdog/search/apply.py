"""The best trial into params.yaml, the study's one source of settings: each searched value it changes gets a
comment naming the search, the trial and its objective; every other line, comment and the layout stay as they
were (ruamel.yaml's round trip). The search never writes conf/: `dvc repro` then trains with the new values and
`dvc params diff` shows them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from catdog.common.files import write_text
from catdog.search.budget import OVERRIDES
from catdog.search.settings import SearchError, params_key

COMMENT_MARK = "search "


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The complete trial with the best objective, or an error saying the search has none yet."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise SearchError(
            f"search {study.study_name!r} has no complete trial yet; run it "
            f"(`python src/search.py hparams_search=...`) before applying it"
        )
    return max(complete, key=lambda t: (t.value, -t.number))


def round_trip() -> YAML:
    yaml = YAML()
    yaml.width = 4096  # never re-wrap a long comment or value
    yaml.preserve_quotes = True
    return yaml


def note(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """The comment beside each applied value: which search chose it, and its objective."""
    seeds = ", ".join(map(str, study.user_attrs.get("seeds", [])))
    return f"{COMMENT_MARK}{study.study_name}, trial {trial.number}: mean best val accuracy {trial.value:.4f} over seeds {seeds}"


def comment_beside(mapping: CommentedMap, key: str, text: str) -> None:
    """Put `# text` at the end of `key`'s line, replacing an earlier search's note there and keeping any other
    comment (ruamel keeps the comment lines below a key in the same token, after its end-of-line comment)."""
    token = mapping.ca.items.get(key, [None, None, None, None])[2]
    if token is None:
        mapping.yaml_add_eol_comment("#", key, column=0)
        token = mapping.ca.items[key][2]
        token.value = ""
    line, newline, below = token.value.partition("\n")
    kept = line.strip()
    if kept.startswith(f"# {COMMENT_MARK}"):
        kept = ""
    # The emitter pads to the token's column, then writes one space: two in all, as beside every value here.
    token.column = 0
    token.value = f" {kept + '  ' if kept else ''}# {text}{newline}{below}"


def _parent(doc: CommentedMap, dotted: str, path: Path) -> tuple[CommentedMap, str]:
    node, *parts, last = dotted.split(".")
    mapping = doc.get(node)
    for part in parts:
        mapping = mapping.get(part) if isinstance(mapping, CommentedMap) else None
    if not isinstance(mapping, CommentedMap) or last not in mapping:
        raise SearchError(f"{path}: no `{dotted}`; the searched setting must be there to be applied")
    return mapping, last


def apply_best(study: optuna.Study, variant: str, path: Path) -> dict[str, tuple[Any, Any]]:
    """Write the best trial's settings into params.yaml at `path`; return each changed key's (old, new) value."""
    trial = best_trial(study)
    yaml = round_trip()
    doc = yaml.load(path.read_text(encoding="utf-8"))
    changed = {}
    for key, value in trial.user_attrs[OVERRIDES].items():
        dotted = params_key(variant, key)
        mapping, last = _parent(doc, dotted, path)
        if mapping[last] == value:
            continue
        changed[dotted] = (mapping[last], value)
        mapping[last] = value
        comment_beside(mapping, last, note(study, trial))
    out = io.StringIO()
    yaml.dump(doc, out)
    check_reads_back(out.getvalue(), {k: new for k, (_, new) in changed.items()}, path)
    write_text(path, out.getvalue())
    return changed


def check_reads_back(text: str, values: dict[str, Any], path: Path) -> None:
    """The written file must give conf/ (through OmegaConf, as `${params:...}` reads it) exactly the values."""
    loaded = OmegaConf.create(text)
    for key, value in values.items():
        if OmegaConf.select(loaded, key) != value:
            raise SearchError(f"{path}: `{key}` would read back as {OmegaConf.select(loaded, key)!r}, not {value!r}")
