"""The access-cost benchmark program's cheap parts: its --help, its sizes and its tables.

Nothing here starts valgrind or a server: the benchmark itself is a program, run by hand (benchmarks/README.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import access_cost  # noqa: E402
from access_cost import Row, checks_table, parse_args, parse_callgrind, results_table  # noqa: E402


def test_help_runs_without_starting_anything() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "access_cost.py"), "--help"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for flag in ("--quick", "--requests", "--rounds", "--no-callgrind", "--no-proc", "--json"):
        assert flag in out.stdout


def test_sizes() -> None:
    assert (parse_args([]).requests, parse_args([]).rounds) == (1000, 30)
    quick = parse_args(["--quick"])
    assert (quick.requests, quick.rounds, quick.per_round) == (300, 10, 100)
    with pytest.raises(SystemExit):
        parse_args(["--requests", "0"])


def test_the_named_configuration_is_the_issues_worst_case() -> None:
    named = {s.name: s for s in access_cost.setups("sk-ag-named")}["named"]
    assert access_cost.NAMED_KEYS == 50 and len(access_cost.ALLOW_RULES) + len(access_cost.DENY_RULES) >= 150
    assert named.headers["Authorization"] == "Bearer sk-ag-named" and "X-Forwarded-For" in named.headers
    assert named.env["AGFAST_SECURITY_TRUSTED_PROXIES"] == access_cost.TRUSTED_PROXY


def test_results_table_adds_against_the_open_configuration() -> None:
    rows = [Row("open", "auth off", 4_000_000.0, 800.0), Row("main", "strict", 4_010_000.0, 808.0),
            Row("named", "keys + IP", 4_100_000.0, None)]  # fmt: skip
    lines = results_table(rows, 1000, 30, 200).splitlines()
    assert lines[0].startswith("| configuration | instructions/request (N=1000) |") and "median of 30 × 200" in lines[0]
    assert lines[2] == "| open: auth off | 4,000,000 | +0.00% | 800.0 | +0.00% |"
    assert lines[3] == "| main: strict | 4,010,000 | +0.25% | 808.0 | +1.00% |"
    assert lines[4] == "| named: keys + IP | 4,100,000 | +2.50% | – | – |"


def test_checks_table_shares_of_a_request() -> None:
    table = checks_table({"IP screen": 0.5, "named key": 2.0}, 1000.0).splitlines()
    assert table[2] == "| IP screen | 0.50 | 0.05% |" and table[3] == "| named key | 2.00 | 0.20% |"
    assert checks_table({"IP screen": 0.5}, None).splitlines()[2].endswith("| – |")


def test_callgrind_total() -> None:
    out = b"# callgrind format\nevents: Ir\nfn=main\n1 5\nsummary: 123456789\ntotals: 123456789\n"
    assert parse_callgrind(out) == 123456789
    with pytest.raises(RuntimeError):
        parse_callgrind(b"events: Ir\n")
