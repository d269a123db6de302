"""The README and docs/ name only what exists, so a rename cannot leave them stale: every stage, file, config key,
script option, module and test they name is in the current tree (dvc.yaml and its declared outputs, the composed
config and params.yaml, the scripts' sources); docs/configuration.md documents every key with its composed default
and, for the checked keys, exactly the allowed values `catdog.settings.checks.CHECKS` enforces; a leaderboard they
quote is reports/'s; they link the benchmarks' results files and copy none of their tables; and no sentence narrates
history. Fast: no TensorFlow."""

from __future__ import annotations

import ast
import fnmatch
import itertools
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from catdog.settings.checks import CHECKS
from catdog.settings.params import compose_config

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONF = REPO / "conf"
# The compositions whose keys docs/configuration.md documents: the root config's choices, then each other option.
OPTIONS = ["model=transfer", "augment=on", "optimizer=adamw", "optimizer=sgd", "optimizer=rmsprop"]
# The section of conf/search.yaml's own keys (`src/search.py`); the sections of its searches, `hparams_search=<name>`.
SEARCH = "search"
HYDRA_FLAGS = {"--multirun", "-m", "--cfg", "--help", "--hydra-help", "--info", "--config-name", "--config-dir"}
PLACEHOLDER = re.compile(r"<[^>]*>|…|\{[^}]*\}")
FILE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".csv", ".png", ".md", ".html", ".keras", ".db", ".lock", ".toml")
HISTORY = re.compile(
    r"\bissue #?\d+|\b(this|last|previous|next) round\b|\bround \d+|\bsince (issue|commit|round)|\b(has|have) since\b"
    r"|\bon commit\b|commit `[0-9a-f]{7,}`",
    re.I,
)


# --- reading the docs ------------------------------------------------------------------------------------------------


def blocks(text: str) -> tuple[str, list[str]]:
    """The prose (fenced blocks left out) and the lines of every fenced block."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            code.append(line)
        else:
            prose.append(line)
    return "\n".join(prose), code


def inline_spans(prose: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose)


@cache
def doc_parts(path: Path) -> tuple[str, list[str], list[str]]:
    prose, code = blocks(path.read_text(encoding="utf-8"))
    return prose, code, inline_spans(prose)


def commands() -> list[tuple[Path, str]]:
    """Every command line the docs show: fenced lines (a `$ ` prompt stripped, `\\` continuations joined) and inline
    spans that run something."""
    found = []
    for doc in DOCS:
        _, code, spans = doc_parts(doc)
        joined, pending = [], ""
        for line in code:
            line = pending + line.removeprefix("$ ")
            pending = line[:-1] + " " if line.endswith("\\") else ""
            if not pending:
                joined.append(line)
        found += [(doc, line.split(" #")[0]) for line in joined]
        found += [(doc, span) for span in spans if re.search(r"\b(python|dvc) ", span)]
    return found


def tokens(line: str) -> list[str]:
    return [t.strip("'\"") for t in line.split()]


# --- what the tree holds ---------------------------------------------------------------------------------------------


@cache
@cache
def params() -> DictConfig:
    """params.yaml, read once (the tests only read it)."""
    return OmegaConf.load(REPO / "params.yaml")


@cache
def dvc_file() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def matrix_items() -> list[dict[str, str]]:
    study = params().study
    return [{"variant": v, "seed": str(s)} for v, s in itertools.product(study.variants, study.seeds)]


def expand(text: str, item: dict[str, str] | None) -> str:
    for key, value in (item or {}).items():
        text = text.replace(f"${{item.{key}}}", value)
    return text


@cache
def stages() -> tuple[str, ...]:
    names = []
    for name, stage in dvc_file()["stages"].items():
        names += [f"{name}@{i['variant']}-{i['seed']}" for i in matrix_items()] if "matrix" in stage else [name]
    return tuple(names)


@cache
def declared_outputs() -> tuple[str, ...]:
    """Every path a stage writes (outs, metrics, plots), expanded over the train matrix."""
    found = []
    for stage in dvc_file()["stages"].values():
        items = matrix_items() if "matrix" in stage else [None]
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                found += [expand(path, item).rstrip("/") for item in items]
    return tuple(found)


@cache
def tracked() -> tuple[str, ...]:
    """The repository's files (committed, or new and not ignored) and their folders."""
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listed, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    folders = {str(p) for f in files for p in Path(f).parents} - {"."}
    return tuple(sorted(set(files) | folders))


@cache
def ignored(path: str) -> bool:
    """A runtime path (a run's folder, the local store, the decoded cache): one the project's .gitignore names, as
    a file or as a folder (a folder's pattern matches only with the slash where the folder does not exist)."""
    return any(subprocess.run(["git", "check-ignore", "-q", p], cwd=REPO).returncode == 0 for p in (path, path + "/"))


@cache
def top_level() -> frozenset[str]:
    """The first parts of the paths the docs may name: the tree's, the stages' outputs' and the ignored runtime
    folders' (outputs/, checkpoints/, mlflow.db ...)."""
    runtime = [line.strip("/").split("/")[0] for line in (REPO / ".gitignore").read_text().splitlines()]
    return frozenset(p.split("/")[0] for p in (*tracked(), *declared_outputs(), *runtime) if p and "*" not in p)


@cache
def compositions() -> dict[str, DictConfig]:
    return {"": compose_config(CONF), **{o: compose_config(CONF, [o]) for o in OPTIONS}}


@cache
def hydra_compositions() -> list[DictConfig]:
    launchers = ["hydra/launcher=joblib", "hydra/launcher=slurm"]
    return [compose_config(CONF, [o], hydra_config=True) for o in launchers]


def node_at(cfg: DictConfig, key: str) -> object | None:
    """The config node at dotted `key`, unresolved (an interpolation stays one, a mandatory `???` too), or None."""
    node = cfg
    for part in key.split("."):
        if not OmegaConf.is_dict(node) or part not in node.keys():  # noqa: SIM118 (`in` on a DictConfig misses `???` keys)
            return None
        node = node._get_node(part)
    return node


def has_key(cfg: DictConfig, key: str) -> bool:
    return node_at(cfg, key) is not None


@cache
def search_compositions() -> list[DictConfig]:
    """The root config of `src/search.py` (conf/search.yaml) with each of its searches."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return [
            compose("search", [f"hparams_search={p.stem}"]) for p in sorted((CONF / "hparams_search").glob("*.yaml"))
        ]


def config_key_exists(key: str) -> bool:
    if key.startswith("hydra."):
        return any(has_key(c, key) for c in hydra_compositions())
    composed = [*compositions().values(), *search_compositions()]
    return any(has_key(c, key) for c in composed) or params_key_exists(key)


def params_key_exists(key: str) -> bool:
    """`key` is in params.yaml; a `<v>` key in at least one variant (the study table marks the others —)."""
    keys = [key.replace("<v>", v).replace("<variant>", v) for v in params().study.variants] if "<" in key else [key]
    return any(has_key(params(), k) for k in keys)


def config_roots() -> set[str]:
    return set(compositions()[""].keys()) | set(params().keys()) | {"hydra"}


@cache
def group_option_exists(group: str, option: str) -> bool:
    """Whether `group=option` exists: a file in conf/ (every one composes: tests/test_config.py), or for a hydra/
    group a launcher plugin's own config, which only composing finds."""
    if not group.startswith("hydra") or (CONF / group / f"{option}.yaml").is_file():
        return (CONF / group / f"{option}.yaml").is_file()
    try:
        compose_config(CONF, [f"{group}={option}"], hydra_config=group.startswith("hydra"))
    except Exception:  # Hydra's MissingConfigException, or any error composing it
        return False
    return True


def script_sources(script: Path) -> str:
    """The script and the catdog modules it imports: where its options are parsed."""
    text = script.read_text(encoding="utf-8")
    modules = [n.module for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom) and n.module]
    files = [REPO / "src" / Path(*m.split(".")).with_suffix(".py") for m in modules if m.startswith("catdog")]
    return "\n".join([text, *(f.read_text(encoding="utf-8") for f in files if f.is_file())])


def is_hydra(script: Path) -> bool:
    return "@hydra.main" in script.read_text(encoding="utf-8")


# --- the checks ------------------------------------------------------------------------------------------------------


def looks_like_path(span: str) -> bool:
    if re.search(r"[\s:$~]|^\.\.|^/|^-", span) or span.startswith(("http", "catdog.")):
        return False
    first = span.split("/")[0]
    return first in top_level() and ("/" in span or span.endswith(FILE_SUFFIXES) or first in ("mlflow.db",))


def path_exists(span: str) -> bool:
    """In the tree or among the stages' outputs; inside a declared output folder (a model folder, the data set) or
    above one; or a runtime path git ignores. `<...>`, `{...}` and `…` match anything."""
    pattern = PLACEHOLDER.sub("*", span.rstrip("/"))
    if any(fnmatch.fnmatchcase(p, pattern) for p in (*tracked(), *declared_outputs())):
        return True
    parts = pattern.split("/")
    for out in declared_outputs():
        depth = out.count("/") + 1
        if len(parts) > depth and fnmatch.fnmatchcase(out, "/".join(parts[:depth])):
            return True
        if fnmatch.fnmatchcase("/".join(out.split("/")[: len(parts)]), pattern):
            return True
    return ignored(pattern.replace("*", "x"))


def mentioned_paths() -> list[tuple[Path, str]]:
    found = []
    for doc in DOCS:
        _, _, spans = doc_parts(doc)
        words = [w for d, line in commands() if d == doc for w in tokens(line)]
        for span in [*spans, *words]:
            span = span.split("::")[0].strip("`(").rstrip(".,;)`")
            if looks_like_path(span):
                found.append((doc, span))
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith(("http://", "https://")):
                found.append((doc, str((doc.parent / target).resolve().relative_to(REPO))))
    return found


def test_every_file_the_docs_name_exists() -> None:
    missing = sorted({f"{doc.name}: {span}" for doc, span in mentioned_paths() if not path_exists(span)})
    assert not missing, missing


def test_every_stage_the_docs_name_is_in_the_pipeline() -> None:
    named = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        named += [(doc, s) for s in re.findall(r"(?<![\w/])(train@[\w<>.…-]+)", text)]
        named += [
            (doc, t) for d, line in commands() if d == doc for t in re.findall(r"dvc repro (?!-)([\w@<>-]+)", line)
        ]
    wrong = sorted(
        {
            f"{doc.name}: {s}"
            for doc, s in named
            if not any(fnmatch.fnmatchcase(x, PLACEHOLDER.sub("*", s)) for x in stages())
        }
    )
    assert not wrong, f"not a stage of dvc.yaml ({', '.join(stages())}): {wrong}"


def test_the_stage_list_shown_is_the_pipelines() -> None:
    """The `dvc stage list` transcript names every stage, in order, with the outputs dvc.yaml declares."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = text.split("$ uv run dvc stage list\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[0] for line in listed] == list(stages())
    for line in listed:
        shown = re.findall(r"Outputs ([^;]+)", line)[0].split(", ")
        assert all(path_exists(p) for p in shown), line


def dotted_keys() -> list[tuple[Path, str]]:
    """Backticked `a.b.c` (or `a.b=value`) whose first part is a config root; file names and modules left out."""
    found = []
    for doc in DOCS:
        for span in doc_parts(doc)[2]:
            match = re.fullmatch(r"\+?([a-z_]+(?:\.[a-z_0-9<>]+)+)(?:=\S*)?", span)
            if match and not span.endswith(FILE_SUFFIXES) and match.group(1).split(".")[0] in config_roots():
                found.append((doc, span))
    return found


def overrides() -> list[tuple[Path, str, str]]:
    """`key=value` arguments of the Hydra scripts, and `-S key=value` of `dvc exp run`: (doc, key, value)."""
    found = []
    for doc, line in commands():
        words = tokens(line)
        if "exp" in words and "run" in words:
            found += [
                (doc, "-S " + w.split("=")[0], w.split("=", 1)[1]) for a, w in itertools.pairwise(words) if a == "-S"
            ]
        for i, word in enumerate(words):
            script = REPO / word
            if word.startswith("src/") and script.is_file() and is_hydra(script):
                found += [(doc, *w.split("=", 1)) for w in words[i + 1 :] if "=" in w and not w.startswith("-")]
    return found


def test_every_config_key_the_docs_name_exists() -> None:
    wrong = []
    for doc, span in dotted_keys():
        key = span.split("=")[0]
        # `+key` adds a key to the config: a script must read it.
        ok = key[1:] in script_text_of_src() if key.startswith("+") else config_key_exists(key)
        wrong += [] if ok else [f"{doc.name}: `{span}`"]
    for doc, key, value in overrides():
        if key.startswith("-S "):
            ok = params_key_exists(key[3:])
        elif key.startswith("+"):
            ok = key[1:] in script_text_of_src()
        elif (CONF / key).is_dir() or key == "hydra/launcher":
            ok = all(group_option_exists(key, v) for v in value.split(","))
        else:
            ok = config_key_exists(key)
        wrong += [] if ok else [f"{doc.name}: {key}={value}"]
    assert not wrong, sorted(set(wrong))


@cache
def script_text_of_src() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "src").rglob("*.py"))


def test_every_script_and_option_the_docs_use_exists() -> None:
    wrong = []
    for doc, line in commands():
        words = tokens(line)
        for i, word in enumerate(words):
            if not re.fullmatch(r"(src|bench)/[\w/]+\.py", word) or i == 0 or not words[i - 1].endswith("python"):
                continue
            script = REPO / word
            if not script.is_file():
                wrong.append(f"{doc.name}: {word} does not exist")
                continue
            source, rest = script_sources(script), words[i + 1 :]
            for arg in rest:
                if arg in ("|", "&&", ";", ">"):
                    break
                if arg.startswith("-") and not arg.startswith("--"):
                    ok = is_hydra(script) and arg in HYDRA_FLAGS
                elif arg.startswith("--"):
                    flag = arg.split("=")[0]
                    ok = (is_hydra(script) and flag in HYDRA_FLAGS) or f'"{flag}"' in source
                elif "=" in arg and not is_hydra(script):
                    ok = f'"{arg.split("=")[0]}"' in source
                elif not is_hydra(script) and arg == rest[0] and re.fullmatch(r"[a-z][a-z-]+", arg):
                    ok = f'"{arg}"' in source  # a subcommand (team_server.py start)
                else:
                    ok = True  # a path, a value, a Hydra override (checked with the config keys)
                wrong += [] if ok else [f"{doc.name}: {word} {arg}"]
    assert not wrong, sorted(set(wrong))


@cache
def script_text_of_scripts() -> str:
    return script_text_of_src() + "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "bench").glob("*.py"))


def test_every_option_named_in_prose_exists() -> None:
    """An option in a sentence (`--print-password`) is one of the project's scripts' (or Hydra's), or belongs to a
    command the page shows in full (`--allowed-hosts` of `mlflow server`), whose own check then applies."""
    wrong = []
    for doc in DOCS:
        shown = " ".join(line for d, line in commands() if d == doc)
        for span in doc_parts(doc)[2]:
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span):
                known = f'"{option}"' in script_text_of_scripts() or option in HYDRA_FLAGS or option in shown.split()
                wrong += [] if known else [f"{doc.name}: {option}"]
    assert not wrong, sorted(set(wrong))


def test_every_module_and_test_the_docs_name_exists() -> None:
    wrong = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for name in re.findall(r"`(catdog(?:\.\w+)+)`", text):
            parts = name.split(".")
            parent = module_file(parts[:-1])
            if module_file(parts) is None and (parent is None or not defines(parent, parts[-1])):
                wrong.append(f"{doc.name}: {name}")
        for path, test in re.findall(r"(tests/\w+\.py)::(\w+)", text):
            if not re.search(rf"^def {test}\(", (REPO / path).read_text(encoding="utf-8"), re.M):
                wrong.append(f"{doc.name}: {path}::{test}")
    assert not wrong, wrong


def module_file(parts: list[str]) -> Path | None:
    base = REPO / "src" / Path(*parts)
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def defines(module: Path, name: str) -> bool:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    names |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {n.target.id for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    return name in names


# --- docs/configuration.md against the config and its checks ---------------------------------------------------------


def configuration_rows() -> list[tuple[str, str, list[str]]]:
    """(the section's option, e.g. `model=transfer` or "", the key, its cells) for every row of "Every key"."""
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows, option = [], ""
    for line in text.split("## Every key", 1)[1].splitlines():
        if line.startswith("### "):
            found = re.search(r"`(\w+=\w+)`", line)
            option = found.group(1) if found else (SEARCH if line.strip() == f"### {SEARCH}" else "")
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else None
        if cells:
            rows.append((option, cells[0].strip("`"), cells[1:]))
    return rows


def leaves(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        child = node._get_node(key)
        keys += leaves(child, f"{prefix}{key}.") if OmegaConf.is_dict(child) else [f"{prefix}{key}"]
    return keys


def first_code(cell: str) -> str:
    return re.match(r"`([^`]*)`", cell).group(1)


@cache
def sections() -> dict[str, DictConfig]:
    """The composition each section of "Every key" is checked against, by its option: the root config's ("") and
    each group option's (OPTIONS); conf/search.yaml's without a search (SEARCH), and with each of its searches."""
    searches = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        own = {SEARCH: compose(SEARCH, ["~hparams_search"])}
        own |= {f"hparams_search={s}": compose(SEARCH, [f"hparams_search={s}"]) for s in searches}
    return {**compositions(), **own}


def section_keys(option: str, cfg: DictConfig) -> list[str]:
    """The keys a section has rows for: the root's, every key; a group option's, its group's (`model.*`);
    conf/search.yaml's, the `search.*` keys; a search's, the keys its own file sets."""
    if not option:
        return leaves(cfg)
    group, _, name = option.partition("=")
    if group == "hparams_search":
        own = OmegaConf.load(CONF / group / f"{name}.yaml")
        return leaves(OmegaConf.masked_copy(own, [k for k in own if k != "defaults"]))
    return [key for key in leaves(cfg) if key.startswith(group + ".")]


def test_configuration_documents_every_key_with_its_default() -> None:
    """Each key of the root composition has a row (or its parent has, as `data.expected`); each key of another
    group option (`model=transfer`) has a row in that option's section, and so has each key of the search's root
    config (conf/search.yaml) and each key a search's file sets (`hparams_search=baseline`)."""
    rows = configuration_rows()
    documented = {(option, key) for option, key, _ in rows}
    undocumented = [
        f"{option or 'root'}: {key}"
        for option, cfg in sections().items()
        for key in section_keys(option, cfg)
        if not any((option, k) in documented for k in [key, *ancestors(key)])
    ]
    assert not undocumented, f"docs/configuration.md has no row for {undocumented}"
    wrong = []
    for option, key, cells in rows:
        cfg = sections()[option]
        if not has_key(cfg, key):
            wrong.append(f"{option or 'root'}: {key} is not a key")
            continue
        shown, raw = first_code(cells[0]), node_at(cfg, key)
        raw_text = raw._value() if not OmegaConf.is_dict(raw) else None
        if shown != raw_text and yaml.safe_load(shown) != value_of(cfg, key):
            wrong.append(f"{option or 'root'}: {key} shows {shown!r}, the config has {value_of(cfg, key)!r}")
    assert not wrong, wrong


def ancestors(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def value_of(cfg: DictConfig, key: str) -> object:
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def test_configuration_states_exactly_the_allowed_values_the_checks_enforce() -> None:
    allowed = {key: cells[1] for option, key, cells in configuration_rows() if option == ""}
    wrong = [
        f"{key}: {allowed.get(key)!r} instead of {message!r}"
        for key, (_, message) in CHECKS.items()
        if allowed.get(key) != message
    ]
    assert not wrong, wrong


def test_configuration_lists_every_group_option_and_params_value() -> None:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for group in ("variant", "model", "augment", "optimizer", "hydra/launcher", "hparams_search"):
        row = re.search(rf"^\| `{re.escape(group)}` \| ([^|]+) \|", text, re.M)
        assert row, f"no row for the group {group}"
        options = set(re.findall(r"`(\w+)`", row.group(1)))
        assert options >= {p.stem for p in (CONF / group).glob("*.yaml")}, f"{group}: an option in conf/ is missing"
        assert all(group_option_exists(group, o) for o in options), f"{group}: {options} do not all compose"
    variants = list(params().study.variants)
    header = re.search(r"^\| key \| (.+) \|$", text.split("## The study", 1)[1], re.M).group(1)
    assert [c.strip() for c in header.split("|")] == variants
    rows = dict(re.findall(r"^\| `variants\.<v>\.([\w.]+)` \|(.+)\|$", text, re.M))
    for key, cells in rows.items():
        shown = [None if c.strip() == "—" else yaml.safe_load(first_code(c.strip())) for c in cells.split("|")]
        assert shown == [OmegaConf.select(params(), f"variants.{v}.{key}") for v in variants], key
    keys = {key for v in variants for key in leaves(params().variants[v])}
    assert keys <= set(rows), f"docs/configuration.md's study table has no row for {sorted(keys - set(rows))}"


# --- results, history, the map ---------------------------------------------------------------------------------------


def tables(text: str) -> list[list[str]]:
    found, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found, current = [*found, current], []
    return found


RESULTS = [REPO / "reports" / "leaderboard.md"]
BENCH_RESULTS = sorted((REPO / "bench" / "results").glob("*.md"))


def test_quoted_result_tables_are_the_committed_ones() -> None:
    """A table whose header is a result file's is that file's, row for row: numbers come from the files."""
    quoted = 0
    for doc in DOCS:
        for table in tables(doc.read_text(encoding="utf-8")):
            source = next((r for r in RESULTS if table[0] in r.read_text(encoding="utf-8").splitlines()), None)
            if source is not None:
                quoted += 1
                lines = source.read_text(encoding="utf-8").splitlines()
                assert [row for row in table if row not in lines] == [], f"{doc.name} misquotes {source.name}"
    assert quoted >= 1  # the leaderboard


def test_the_benchmark_results_are_linked_and_never_copied() -> None:
    """A benchmark's table lives in its results file (bench/results/<name>.md, which names its commit, settings and
    machine); docs/performance.md links every one, and no doc holds a table headed as one of them."""
    performance = REPO / "docs" / "performance.md"
    targets = re.findall(r"\]\(([^)#]+)\)", performance.read_text(encoding="utf-8"))
    linked = {(performance.parent / target).resolve() for target in targets}
    assert BENCH_RESULTS and [r.name for r in BENCH_RESULTS if r not in linked] == []
    headers = {table[0] for r in BENCH_RESULTS for table in tables(r.read_text(encoding="utf-8"))}
    copied = [(doc.name, t[0]) for doc in DOCS for t in tables(doc.read_text(encoding="utf-8")) if t[0] in headers]
    assert copied == [], "a doc copies a table of bench/results/: link the file instead"


def test_no_sentence_narrates_history() -> None:
    found = [f"{doc.name}: {m.group(0)!r}" for doc in DOCS for m in HISTORY.finditer(doc.read_text(encoding="utf-8"))]
    assert not found, f"history belongs in CHANGELOG.md: {found}"


def test_the_readme_maps_every_page_and_stays_short() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert {p.name for p in DOCS[1:]} == set(re.findall(r"\(docs/(\w+\.md)\)", readme))
    assert len(readme.splitlines()) <= 150


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_each_page_starts_from_what_the_user_wants(doc: Path) -> None:
    first = next(line for line in doc.read_text(encoding="utf-8").splitlines()[1:] if line.strip())
    assert doc.name == "README.md" or first.startswith(("You want", "What you do")), first
