"""kill -9 while accounts are being written: every file on disk stays whole (old or new, never half)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from campaign import report, size
from helpers import AGFAST_ROOT

from agfast.upstream.accounts import AccountStore

ACCOUNTS = 5
KILLS = size(40, 500)

# The writer saves every account over and over with a growing payload (so a torn write would show), and says
# "go" once it is writing; the test kills it at a random moment after that.
WRITER = """
import sys
from agfast.upstream.accounts import AccountStore
store = AccountStore(sys.argv[1])
accounts = store.load_all()
print("go", flush=True)
n = 0
while True:
    for acc in accounts:
        n += 1
        acc.access_token = "ya29." + "x" * (n % 4096)
        acc.expiry_timestamp = n
        store.save(acc)
"""


def test_kill9_during_account_writes_leaves_whole_files(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    for i in range(ACCOUNTS):
        store.upsert(f"kill{i}@example.com", f"1//refresh-{i}", access_token="ya29.start", expires_in=3600)
    rng = random.Random(9)
    started = time.monotonic()
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=AGFAST_ROOT
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        # Every account file and the index parse; every account keeps its refresh token.
        index = orjson.loads((tmp_path / "accounts.json").read_bytes())
        assert len(index["accounts"]) == ACCOUNTS
        loaded = AccountStore(tmp_path).load_all()
        assert sorted(a.refresh_token for a in loaded) == [f"1//refresh-{i}" for i in range(ACCOUNTS)]
        for path in (tmp_path / "accounts").glob("*.json"):
            orjson.loads(path.read_bytes())
    leftovers = [p.name for p in tmp_path.rglob("*.tmp")]
    report("kill -9 during account writes", kills=KILLS, accounts=ACCOUNTS, corrupt=0,
           temp_files_left=len(leftovers), seconds=round(time.monotonic() - started, 1))  # fmt: skip
