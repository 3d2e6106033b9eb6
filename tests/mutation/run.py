"""Mutation check: does the suite notice when the code it guards is broken?

    python tests/mutation/run.py                 # every mutation in MUTATIONS
    python tests/mutation/run.py rotation done   # only those whose name contains one of the words
    python tests/mutation/run.py --list
    python tests/mutation/run.py --json

Each entry of `MUTATIONS` (tests/mutation/mutations.py) names a file, an exact snippet, what to put in its
place, and the tests that should notice. The checkout is copied once to a temporary directory (built
extensions included, `.git` and `.venv` left out); each mutation is applied there alone, the named tests run
against the copy with `python -m pytest` (the copy's `agfast/` comes first on sys.path), and the original
text is put back before the next one. The working tree is never edited. A mutation is *killed* when the
tests fail, *survived* when they pass. The named tests are first run unmutated: they must pass, or the
results would mean nothing.

Not part of `pytest`: it runs the named tests once per mutation and takes minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mutations import MUTATIONS, Mutation  # noqa: E402

ROOT = HERE.parent.parent
# What the copy leaves out: VCS data, the venv, caches and build trees (extensions live in agfast/ in place).
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
    ".hypothesis", "results",
)  # fmt: skip
# A mutation that makes the tests hang is killed too; most named test sets finish in well under a minute.
RUN_TIMEOUT = 300


def pytest_cmd(tests: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]


def run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[str, float, str]:
    """("passed" | "failed" | "error" | "timeout", seconds, output tail) for the named tests in `copy`."""
    started = time.monotonic()
    try:
        done = subprocess.run(pytest_cmd(tests), cwd=copy, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started, ""
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    # pytest: 0 all passed, 1 some failed; anything else (usage, collection, internal errors) is not a verdict.
    outcome = {0: "passed", 1: "failed"}.get(done.returncode, "error")
    return outcome, time.monotonic() - started, tail


def make_copy(dest: Path) -> Path:
    copy = dest / "agfast-mutants"
    shutil.copytree(ROOT, copy, ignore=IGNORE)
    probe = subprocess.run(
        [sys.executable, "-c", "import agfast; print(agfast.__file__)"], cwd=copy, capture_output=True, text=True
    )
    if not probe.stdout.strip().startswith(str(copy)):
        sys.exit(f"the copy does not shadow the installed agfast (imported {probe.stdout.strip() or probe.stderr})")
    return copy


def apply(copy: Path, m: Mutation) -> str:
    """Write the mutant; returns the original text for restoring."""
    path = copy / m.file
    text = path.read_text()
    count = text.count(m.original)
    if count != 1:
        raise SystemExit(f"{m.name}: the original snippet occurs {count} times in {m.file}; update the table")
    path.write_text(text.replace(m.original, m.mutated))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="run mutations whose name contains one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--json", action="store_true", help="one JSON line per mutation instead of the table")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(w in m.name for w in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.file}: {m.why}")
        return
    with tempfile.TemporaryDirectory(prefix="agfast-mutation-") as tmp:
        copy = make_copy(Path(tmp))
        union = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        outcome, seconds, tail = run_tests(copy, union)
        if outcome != "passed":
            sys.exit(f"the named tests fail without any mutation ({outcome}, {seconds:.0f}s):\n{tail}")
        print(f"baseline: {len(union)} test selections pass unmutated ({seconds:.0f}s)", file=sys.stderr)
        survivors = 0
        for m in chosen:
            original = apply(copy, m)
            try:
                outcome, seconds, tail = run_tests(copy, m.tests)
            finally:
                (copy / m.file).write_text(original)
            verdict = {"failed": "killed", "timeout": "killed (timeout)", "passed": "SURVIVED"}.get(outcome, "error")
            survivors += verdict in ("SURVIVED", "error")
            if args.json:
                print(orjson.dumps({"name": m.name, "file": m.file, "verdict": verdict, "seconds": round(seconds, 1)
                                    }).decode())  # fmt: skip
            else:
                print(f"{verdict:17} {seconds:5.0f}s  {m.name:32} {m.file}")
                if verdict == "error":
                    print("    " + tail.replace("\n", "\n    "))
            sys.stdout.flush()
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
