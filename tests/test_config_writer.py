"""One writer of config.toml: `agfast accounts client add|remove` and the admin API's saved settings edit the
same file, under one lock, through tomlkit, so neither loses the other's change nor the user's comments."""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import orjson
from helpers import AgfastProcess, request

from agfast import config
from agfast.config import OAuthClient

MAIN_KEY = "sk-config-writer-0123456789"
USER_FILE = f"""# my agfast settings — keep this comment
api_key = "{MAIN_KEY}"  # the key my laptop uses
log_level = "info"

# aliases for my editor
[custom_mapping]
"my-alias" = "gemini-3-flash"
"""
# Changes made by each side while the other makes its own: enough that unlocked writers overlap.
ROUNDS = 12


def save_through_admin_api(port: int, retention_days: int) -> None:
    body = orjson.dumps({"monitor.retention_days": retention_days})
    headers = {"Authorization": f"Bearer {MAIN_KEY}", "Content-Type": "application/json"}
    reply = request(port, "POST", "/api/config", body, headers)
    assert reply.status == 200, reply.body


def test_clients_added_and_settings_saved_at_once_keep_each_other_and_the_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE)
    with AgfastProcess("--port", "0", "--data-dir", str(tmp_path)) as proc:
        saver = threading.Thread(
            target=lambda: [save_through_admin_api(proc.port, days) for days in range(1, ROUNDS + 1)]
        )
        saver.start()
        for i in range(ROUNDS):
            config.add_client_to_file(path, OAuthClient(f"client-{i}", f"id-{i}.apps", f"secret-{i}", f"team {i}"))
        saver.join(60)
        assert not saver.is_alive()
        config.remove_client_from_file(path, "client-0")
        save_through_admin_api(proc.port, ROUNDS + 1)
        assert proc.stop() == 0

    text = path.read_text()
    saved = tomllib.loads(text)
    assert [c["key"] for c in saved["oauth"]["clients"]] == [f"client-{i}" for i in range(1, ROUNDS)]
    assert saved["oauth"]["clients"][0] == {
        "key": "client-1", "client_id": "id-1.apps", "client_secret": "secret-1", "label": "team 1"
    }  # fmt: skip
    assert saved["monitor"]["retention_days"] == ROUNDS + 1
    assert saved["custom_mapping"] == {"my-alias": "gemini-3-flash"} and saved["api_key"] == MAIN_KEY
    for comment in ("# my agfast settings — keep this comment", "# the key my laptop uses", "# aliases for my editor"):
        assert comment in text
    assert text.index("api_key") < text.index("[custom_mapping]")  # the user's order is kept


def test_the_generated_key_goes_first_and_keeps_the_users_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('# mine\n[scheduling]\nmode = "Balance"  # fastest for me\n')
    cfg = config.load({"data_dir": str(tmp_path)}, {})
    key = config.ensure_api_key(cfg)
    text = path.read_text()
    assert f'api_key = "{key}"\n' in text and text.index("api_key") < text.index("[scheduling]")
    assert '"Balance"  # fastest for me' in text and "# mine" in text
    again = config.load({"data_dir": str(tmp_path)}, {})
    assert (again.api_key, again.scheduling_mode) == (key, "Balance")
    # a second process that resolved its config before the first saved a key takes that key, not a new one
    first, late = config.Config(data_dir=tmp_path / "new"), config.Config(data_dir=tmp_path / "new")
    assert config.ensure_api_key(first) is not None
    assert config.ensure_api_key(late) is None and late.api_key == first.api_key
