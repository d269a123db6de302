"""Regenerate params.yaml from conf/: `python src/params.py` (`--check` fails when they differ)."""

import argparse
import sys
from pathlib import Path

from catdog.files import write_text
from catdog.study import render, study_params

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if params.yaml is not what conf/ generates")
    args = parser.parse_args()
    text = render(study_params(ROOT / "conf"))
    target = ROOT / "params.yaml"
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            print(f"{target} differs from conf/; run `python src/params.py`", file=sys.stderr)
            return 1
        return 0
    write_text(target, text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
