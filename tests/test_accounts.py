"""Account files: Antigravity Tools compatibility, lossless round trips, atomic writes, pool eligibility."""

from __future__ import annotations

import copy
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from agfast.upstream.accounts import (
    TOKEN_FIELDS,
    Account,
    AccountFileError,
    AccountStore,
    QuotaModel,
    read_account_file,
    usable,
)

ACCESS = "ya29.a0AfB_SECRET-ACCESS-TOKEN"
REFRESH = "1//0gSECRET-REFRESH-TOKEN"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z

# An account file as Antigravity Tools writes it, with every §4.1 field, including ones agfast never reads.
ANTIGRAVITY_ACCOUNT: dict[str, Any] = {
    "id": "3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e9b7c54",
    "email": "dev.one@gmail.com",
    "name": "Dev One",
    "token": {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_in": 3599,
        "expiry_timestamp": NOW + 3599,
        "token_type": "Bearer",
        "email": "dev.one@gmail.com",
        "project_id": "bamboo-precept-abc12",
        "oauth_client_key": "antigravity-desktop",
        "session_id": "-3750763034362895579",
        "is_gcp_tos": False,
        "id_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    },
    "device_profile": {
        "machine_id": "auth0|user_01HZX8Q4C2",
        "mac_machine_id": "6f1a9a3c-52b7-4c7e-8f0e-2b1d3c4e5f60",
        "dev_device_id": "0c3e8d1f-7a2b-4c5d-9e6f-1a2b3c4d5e6f",
        "sqm_id": "{A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF}",
    },
    "device_history": [
        {
            "id": "hist-1",
            "created_at": 1_760_000_000,
            "label": "initial",
            "profile": {"machine_id": "auth0|user_01HZX8Q4C1"},
            "is_current": False,
        }
    ],
    "quota": {
        "models": [
            {
                "name": "gemini-3-flash",
                "percentage": 100,
                "reset_time": "2026-01-01T05:00:00Z",
                "display_name": "Gemini 3 Flash",
                "supports_images": True,
                "supports_thinking": True,
                "thinking_budget": 24576,
                "recommended": True,
                "max_tokens": 1_048_576,
                "max_output_tokens": 65536,
                "supported_mime_types": {"image/png": True, "application/pdf": True},
            },
            {"name": "claude-opus-4-6-thinking", "percentage": 40, "reset_time": "2026-01-01T03:12:45.5Z"},
        ],
        "last_updated": NOW - 600,
        "is_forbidden": False,
        "forbidden_reason": None,
        "subscription_tier": "PRO",
        "model_forwarding_rules": {"gemini-3-pro-high": "gemini-3.1-pro-high"},
        "quota_groups": [
            {
                "displayName": "Weekly",
                "description": "Resets weekly",
                "buckets": [
                    {
                        "bucketId": "b1",
                        "window": "WEEKLY",
                        "remainingFraction": 0.73,
                        "resetTime": "2026-01-05T00:00:00Z",
                    }
                ],
            }
        ],
    },
    "disabled": False,
    "disabled_reason": None,
    "disabled_at": None,
    "proxy_disabled": False,
    "proxy_disabled_reason": None,
    "proxy_disabled_at": None,
    "protected_models": ["gemini-3-pro-high"],
    "live_limited_models": {
        "claude-opus-4-6-thinking": {
            "model": "claude-opus-4-6-thinking",
            "status": 429,
            "reason": "QUOTA_EXHAUSTED",
            "until": NOW + 300,
            "detected_at": NOW,
            "message": "You have exhausted your capacity on this model.",
        }
    },
    "validation_blocked": False,
    "validation_blocked_until": NOW - 60,
    "validation_blocked_reason": "VALIDATION_REQUIRED",
    "validation_url": "https://accounts.google.com/signin/continue?sarp=1",
    "created_at": 1_760_000_000,
    "last_used": NOW - 30,
    "proxy_id": "proxy-7",
    "proxy_bound_at": 1_765_000_000,
    "custom_label": "work ☕ ünïcode",
    "field_from_a_newer_app": {"nested": [1, 2.5, None, True, "x" * 3]},
}


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(doc if isinstance(doc, bytes) else orjson.dumps(doc))
    return path


def seeded_store(tmp_path: Path) -> AccountStore:
    """A data dir holding the Antigravity account above."""
    write_json(tmp_path / "accounts" / f"{ANTIGRAVITY_ACCOUNT['id']}.json", ANTIGRAVITY_ACCOUNT)
    return AccountStore(tmp_path)


def account(**fields: Any) -> Account:
    """A minimal valid account with top-level fields replaced."""
    acct = Account.new("a@example.com", REFRESH, access_token=ACCESS, expires_in=3600, now=NOW)
    acct.raw.update(fields)
    return acct


def on_disk(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


# -- typed view over the raw file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("id", "3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e9b7c54"),
        ("email", "dev.one@gmail.com"),
        ("name", "Dev One"),
        ("refresh_token", REFRESH),
        ("access_token", ACCESS),
        ("expires_in", 3599),
        ("expiry_timestamp", NOW + 3599),
        ("project_id", "bamboo-precept-abc12"),
        ("disabled", False),
        ("disabled_reason", None),
        ("proxy_disabled", False),
        ("validation_blocked", False),
        ("validation_blocked_until", NOW - 60),
        ("validation_url", "https://accounts.google.com/signin/continue?sarp=1"),
        ("subscription_tier", "PRO"),
        ("is_forbidden", False),
        ("model_forwarding_rules", {"gemini-3-pro-high": "gemini-3.1-pro-high"}),
        ("protected_models", ["gemini-3-pro-high"]),
        ("created_at", 1_760_000_000),
        ("last_used", NOW - 30),
        ("has_quota_data", True),
        ("quota_last_updated", NOW - 600),
        (
            "quota_models",
            [
                QuotaModel(
                    "gemini-3-flash", 100, "2026-01-01T05:00:00Z", 65536, True, 24576, "Gemini 3 Flash", 1_048_576
                ),
                QuotaModel("claude-opus-4-6-thinking", 40, "2026-01-01T03:12:45.5Z", None),
            ],
        ),
    ],
)
def test_accessors(tmp_path: Path, attr: str, expected: Any) -> None:
    (acct,) = seeded_store(tmp_path).load_all()
    assert getattr(acct, attr) == expected


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        (
            {"protected_models": {"claude": {"since": 1}, "gemini-3-flash": {}}},
            "protected_models",
            ["claude", "gemini-3-flash"],
        ),
        ({"protected_models": "junk"}, "protected_models", []),
        ({"validation_blocked_until": (NOW + 5) * 1000}, "validation_blocked_until", NOW + 5),  # ms → s
        ({"created_at": "yesterday"}, "created_at", 0),
        ({"quota": None}, "quota_models", []),
        ({"quota": None}, "has_quota_data", False),
        (
            {"quota": {"models": [{"name": "m", "percentage": "x"}, "junk", {"percentage": 5}]}},
            "quota_models",
            [QuotaModel("m", 0, None, None)],
        ),
        ({"quota": {"subscription_tier": ""}}, "subscription_tier", None),
        ({"disabled": "true"}, "disabled", False),  # only a real JSON true disables
        ({"token": "junk"}, "access_token", ""),
    ],
)
def test_accessors_tolerate_odd_values(fields: dict[str, Any], attr: str, expected: Any) -> None:
    assert getattr(account(**fields), attr) == expected


def test_round_trip_keeps_every_unknown_field(tmp_path: Path) -> None:
    """Load, refresh the access token, save: all else is byte-equal, so the desktop app loses nothing."""
    store = seeded_store(tmp_path)
    (acct,) = store.load_all()
    acct.apply_refresh("ya29.NEW", 3600, now=NOW + 100)
    store.save(acct)

    saved = on_disk(tmp_path / "accounts" / f"{acct.id}.json")
    changed = {"access_token": "ya29.NEW", "expires_in": 3600, "expiry_timestamp": NOW + 3700}
    assert list(saved) == list(ANTIGRAVITY_ACCOUNT)  # same keys, same order
    for key, value in ANTIGRAVITY_ACCOUNT.items():
        if key != "token":
            assert orjson.dumps(saved[key]) == orjson.dumps(value), key
    assert saved["token"] == {**ANTIGRAVITY_ACCOUNT["token"], **changed}


@pytest.mark.parametrize(
    ("mutate", "path", "expected"),
    [
        (lambda a: setattr(a, "project_id", "p-2"), ("token", "project_id"), "p-2"),
        (lambda a: setattr(a, "protected_models", ["b", "a", "a"]), ("protected_models",), ["a", "b"]),
        (lambda a: a.touch(NOW + 9), ("last_used",), NOW + 9),
        (lambda a: a.mark_forbidden("403 PERMISSION_DENIED"), ("quota", "is_forbidden"), True),
        (lambda a: a.block_validation(NOW + 600, "verify", "https://v"), ("validation_blocked_until",), NOW + 600),
        (lambda a: a.clear_validation_block(), ("validation_url",), None),
        (lambda a: a.apply_refresh("t", 60, NOW, refresh_token="1//rotated"), ("token", "refresh_token"), "1//rotated"),
        (
            lambda a: a.set_quota([{"name": "gemini-3-flash", "percentage": 7}], NOW, subscription_tier="ULTRA"),
            ("quota", "quota_groups", 0, "displayName"),  # fields agfast does not write survive a quota update
            "Weekly",
        ),
        (
            lambda a: a.set_quota([], NOW, forwarding_rules={"a": "b"}),
            ("quota", "model_forwarding_rules"),
            {"a": "b"},
        ),
    ],
)
def test_setters_write_the_raw_dict(mutate: Any, path: tuple[Any, ...], expected: Any) -> None:
    acct = Account(copy.deepcopy(ANTIGRAVITY_ACCOUNT))
    mutate(acct)
    node: Any = acct.raw
    for step in path:
        node = node.get(step) if isinstance(node, dict) else node[step]
    assert node == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [(NOW, False), (NOW + 3600 - 91, False), (NOW + 3600 - 90, True), (NOW + 4000, True)],
)
def test_needs_refresh_90s_before_expiry(now: int, expected: bool) -> None:
    assert account().needs_refresh(now) is expected


def test_new_account_has_what_antigravity_requires() -> None:
    raw = Account.new("n@example.com", REFRESH, now=NOW).raw
    assert uuid.UUID(raw["id"]).version == 4
    assert set(raw["token"]) >= {"access_token", "refresh_token", "expires_in", "expiry_timestamp", "token_type"}
    assert (raw["created_at"], raw["last_used"], raw["quota"], raw["name"]) == (NOW, NOW, None, None)


# -- secrets ----------------------------------------------------------------------------------------------


def test_repr_hides_tokens(tmp_path: Path) -> None:
    (acct,) = seeded_store(tmp_path).load_all()
    for text in (repr(acct), str(acct), f"{acct}", repr([acct])):
        assert ACCESS not in text and REFRESH not in text
        assert "dev.one@gmail.com" in text


@pytest.mark.parametrize(
    "content",
    [
        b'{"id": "x", "email": "e", "token": {"refresh_token": "1//0gSECRET-REFRESH-TOKEN",',  # truncated
        orjson.dumps({"email": "e", "token": {"refresh_token": REFRESH, "access_token": ACCESS}}),
        orjson.dumps({"id": "x", "email": "e", "token": {"refresh_token": 5, "access_token": ACCESS}}),
        orjson.dumps([REFRESH]),
    ],
)
def test_errors_never_quote_secrets(tmp_path: Path, content: bytes) -> None:
    path = write_json(tmp_path / "bad.json", content)
    with pytest.raises(AccountFileError) as info:
        read_account_file(path)
    err = info.value
    assert REFRESH not in str(err) and ACCESS not in str(err) and REFRESH not in repr(err)
    assert err.__cause__ is None and err.__context__ is None  # no chained decode error holding the document


# -- pool eligibility (§4.2) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (True, "ok")),  # no quota data yet: usable (agfast differs from the reference here)
        ({"quota": {"models": [], "is_forbidden": False}}, (True, "ok")),
        ({"proxy_disabled": True}, (False, "proxy_disabled")),
        ({"proxy_disabled": True, "proxy_disabled_reason": "quota_protection"}, (True, "ok")),
        ({"validation_blocked": True, "validation_blocked_until": NOW + 1}, (False, "validation_blocked")),
        ({"validation_blocked": True, "validation_blocked_until": NOW}, (True, "ok")),  # expired
        ({"validation_blocked": True}, (True, "ok")),  # no end time: treated as expired, like the reference
        ({"validation_blocked": False, "validation_blocked_until": NOW + 99}, (True, "ok")),
        ({"disabled": True, "disabled_reason": "invalid_grant"}, (False, "disabled")),
        ({"quota": {"models": [], "is_forbidden": True}}, (False, "forbidden")),
        ({"disabled": True, "proxy_disabled": True}, (False, "proxy_disabled")),
    ],
)
def test_usable(fields: dict[str, Any], expected: tuple[bool, str]) -> None:
    assert usable(account(**fields), NOW) == expected


# -- the store --------------------------------------------------------------------------------------------


def test_save_writes_0600_file_and_index(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "data")
    acct = account(name="A")
    store.save(acct)
    path = tmp_path / "data" / "accounts" / f"{acct.id}.json"
    assert on_disk(path) == acct.raw
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "data" / "accounts.json").stat().st_mode & 0o777 == 0o600
    index = on_disk(tmp_path / "data" / "accounts.json")
    assert index == {
        "version": "2.0",
        "accounts": [
            {
                "id": acct.id,
                "email": "a@example.com",
                "name": "A",
                "disabled": False,
                "proxy_disabled": False,
                "protected_models": [],
                "created_at": NOW,
                "last_used": NOW,
            }
        ],
        "current_account_id": acct.id,
    }
    assert [p.name for p in (tmp_path / "data" / "accounts").iterdir()] == [f"{acct.id}.json"]  # no temp left


def test_save_keeps_unknown_index_fields(tmp_path: Path) -> None:
    store = seeded_store(tmp_path)
    acct_id = ANTIGRAVITY_ACCOUNT["id"]
    other = {"id": "other", "email": "o@example.com", "name": None, "created_at": 1, "last_used": 2, "pinned": True}
    index = {
        "version": "2.0",
        "accounts": [{"id": acct_id, "email": "old@example.com", "ui_color": "red"}, other],
        "current_account_id": "other",
        "current_target_ide": "antigravity",
        "sort_mode": "quota",
    }
    write_json(tmp_path / "accounts.json", index)
    (acct,) = store.load_all()
    store.save(acct)
    saved = on_disk(tmp_path / "accounts.json")
    assert (saved["current_account_id"], saved["current_target_ide"], saved["sort_mode"]) == (
        "other",
        "antigravity",
        "quota",
    )
    assert saved["accounts"][0]["ui_color"] == "red"
    assert saved["accounts"][0]["email"] == "dev.one@gmail.com"
    assert saved["accounts"][1] == other


def test_corrupt_index_is_rebuilt(tmp_path: Path) -> None:
    store = seeded_store(tmp_path)
    write_json(tmp_path / "accounts.json", b"{not json")
    extra = account()
    store.save(extra)
    ids = sorted(e["id"] for e in on_disk(tmp_path / "accounts.json")["accounts"])
    assert ids == sorted([ANTIGRAVITY_ACCOUNT["id"], extra.id])


BAD_FILES: list[tuple[str, bytes]] = [
    ("truncated.json", b'{"id": "t", "email": "e", "tok'),
    ("array.json", b"[]"),
    ("no-token.json", b'{"id": "n", "email": "e"}'),
    ("empty-refresh.json", b'{"id": "r", "email": "e", "token": {"refresh_token": ""}}'),
    ("binary.json", b"\xff\xfe\x00garbage"),
    ("empty.json", b""),
]


def test_load_all_skips_unreadable_files(tmp_path: Path) -> None:
    store = seeded_store(tmp_path)
    for name, content in BAD_FILES:
        write_json(tmp_path / "accounts" / name, content)
    (tmp_path / "accounts" / "a-directory.json").mkdir()
    write_json(tmp_path / "accounts" / "notes.txt", b"ignored")
    assert [a.id for a in store.load_all()] == [ANTIGRAVITY_ACCOUNT["id"]]


def test_load_all_without_data_dir(tmp_path: Path) -> None:
    assert AccountStore(tmp_path / "missing").load_all() == []


@pytest.mark.parametrize(
    ("key", "found"),
    [
        ("3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e9b7c54", True),
        ("nope", False),
        ("../accounts/3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e9b7c54", False),  # ids are file names: no traversal
        ("", False),
    ],
)
def test_get(tmp_path: Path, key: str, found: bool) -> None:
    assert (seeded_store(tmp_path).get(key) is not None) is found


def test_upsert_by_email(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    first = store.upsert("Dev@Example.com", "1//first", access_token="at-1", expires_in=3600, now=NOW)
    assert uuid.UUID(first.id).version == 4
    assert first.expiry_timestamp == NOW + 3600
    store.disable(first, "invalid_grant: revoked", now=NOW)

    second = store.upsert("dev@example.com", "1//second", name="Dev", project_id="proj-9", now=NOW + 5)
    assert second.id == first.id
    assert [a.id for a in store.load_all()] == [first.id]
    reloaded = store.get(first.id)
    assert reloaded is not None
    got = (reloaded.refresh_token, reloaded.name, reloaded.project_id, reloaded.disabled, reloaded.access_token)
    assert got == ("1//second", "Dev", "proj-9", False, "at-1")  # a new grant re-enables


def test_upsert_same_token_keeps_disabled(tmp_path: Path) -> None:
    store = AccountStore(tmp_path)
    acct = store.upsert("d@example.com", "1//same", now=NOW)
    store.disable(acct, "invalid_grant", now=NOW)
    assert store.upsert("d@example.com", "1//same", now=NOW).disabled is True


@pytest.mark.parametrize("key", ["by-id", "dev.one@gmail.com", "DEV.ONE@gmail.com"])
def test_remove(tmp_path: Path, key: str) -> None:
    store = seeded_store(tmp_path)
    (seeded,) = store.load_all()
    store.save(seeded)  # writes the index, current = seeded
    other = account()
    store.save(other)
    assert store.remove(seeded.id if key == "by-id" else key) is True
    assert [a.id for a in store.load_all()] == [other.id]
    index = on_disk(tmp_path / "accounts.json")
    assert [e["id"] for e in index["accounts"]] == [other.id]
    assert index["current_account_id"] == other.id
    assert store.remove(key if key != "by-id" else seeded.id) is False


@pytest.mark.parametrize(
    ("reason", "stored"),
    [
        ("invalid_grant: Token has been expired or revoked.", "invalid_grant: Token has been expired or revoked."),
        ("x" * 5000, "x" * 800),
    ],
)
def test_disable(tmp_path: Path, reason: str, stored: str) -> None:
    store = seeded_store(tmp_path)
    (acct,) = store.load_all()
    store.disable(acct, reason, now=NOW)
    raw = on_disk(tmp_path / "accounts" / f"{acct.id}.json")
    assert (raw["disabled"], raw["disabled_reason"], raw["disabled_at"]) == (True, stored, NOW)
    assert usable(Account(raw), NOW) == (False, "disabled")


# -- merge: what a server writes onto a file others may have changed ----------------------------------------


def _remove(store: AccountStore, acct: Account) -> None:
    store.remove(acct.id)


def _disable_elsewhere(store: AccountStore, acct: Account) -> None:
    other = store.get(acct.id)
    assert other is not None
    other.disable("switched off by its owner", now=NOW)
    store.save(other)


def _rename_elsewhere(store: AccountStore, acct: Account) -> None:
    other = store.get(acct.id)
    assert other is not None
    other.name = "Renamed Elsewhere"
    store.save(other)


MERGES = [
    # (what another process did after the server read the account, merged result, what is on disk after)
    (_remove, None, None),
    (_disable_elsewhere, "disabled", ("ya29.fresh", True, "Dev One")),
    (_rename_elsewhere, "ok", ("ya29.fresh", False, "Renamed Elsewhere")),
]


@pytest.mark.parametrize(("meanwhile", "status", "after"), MERGES)
def test_merge_lets_what_others_did_win(tmp_path: Path, meanwhile: Any, status: str | None, after: Any) -> None:
    store = seeded_store(tmp_path)
    (held,) = store.load_all()  # what a server holds in memory
    meanwhile(store, held)
    held.apply_refresh("ya29.fresh", 3599, NOW)  # the server's own change
    merged = store.merge(held, TOKEN_FIELDS)
    path = tmp_path / "accounts" / f"{held.id}.json"
    if after is None:
        assert merged is None and not path.exists()  # a removed account is never re-created
        index = tmp_path / "accounts.json"
        assert not index.exists() or held.id not in index.read_text()
        return
    assert merged is not None and usable(merged, NOW)[1] == status
    raw = on_disk(path)
    assert (raw["token"]["access_token"], raw["disabled"], raw["name"]) == after


def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    store = seeded_store(tmp_path)
    stale = [tmp_path / "accounts" / ".abc.json.x1y2.tmp", tmp_path / ".accounts.json.q9.tmp"]
    kept = [tmp_path / "accounts" / "notes.tmp", tmp_path / ".config.toml.q9.tmp"]  # not written by the store
    for path in stale + kept:
        path.write_bytes(b"{")
    assert store.remove_stale_temp_files() == 2
    assert [p.exists() for p in stale + kept] == [False, False, True, True]
    assert len(store.load_all()) == 1


# -- import -----------------------------------------------------------------------------------------------


def antigravity_dir(root: Path) -> Path:
    """An Antigravity Tools data dir: two accounts, the index, a broken file, a leftover temp file."""
    write_json(root / "accounts" / "a.json", ANTIGRAVITY_ACCOUNT)
    second = {**ANTIGRAVITY_ACCOUNT, "id": "b", "email": "two@gmail.com", "token": {"refresh_token": "1//two"}}
    write_json(root / "accounts" / "b.json", second)
    write_json(root / "accounts" / "broken.json", b"{")
    write_json(root / "accounts" / ".b.json.x1.tmp", b"{")
    write_json(root / "accounts.json", {"version": "2.0", "accounts": [], "current_account_id": None})
    return root


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (antigravity_dir, [("dev.one@gmail.com", REFRESH), ("two@gmail.com", "1//two")]),
        (lambda p: antigravity_dir(p) / "accounts", [("dev.one@gmail.com", REFRESH), ("two@gmail.com", "1//two")]),
        (
            lambda p: write_json(
                p / "export.json",
                {
                    "accounts": [
                        {"email": "x@gmail.com", "refresh_token": "1//x"},
                        {"email": "X@gmail.com", "refresh_token": "1//dup"},
                        {"email": "no-token@gmail.com"},
                        "junk",
                    ]
                },
            ),
            [("x@gmail.com", "1//x")],
        ),
        (lambda p: write_json(p / "one.json", ANTIGRAVITY_ACCOUNT), [("dev.one@gmail.com", REFRESH)]),
        (lambda p: write_json(p / "list.json", [{"email": "l@g.com", "refresh_token": "1//l"}]), [("l@g.com", "1//l")]),
        (lambda p: write_json(p / "other.json", {"hello": "world"}), []),
    ],
)
def test_import_path(tmp_path: Path, make: Any, expected: list[tuple[str, str]]) -> None:
    assert AccountStore(tmp_path / "store").import_path(make(tmp_path / "src")) == expected


@pytest.mark.parametrize("content", [None, b"{broken"])
def test_import_path_explicit_bad_file_raises(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "export.json"
    if content is not None:
        write_json(path, content)
    with pytest.raises(AccountFileError):
        AccountStore(tmp_path).import_path(path)


# -- atomicity --------------------------------------------------------------------------------------------


def test_readers_never_see_a_half_written_file(tmp_path: Path) -> None:
    """One thread rewrites the account (alternating large and small) while another keeps reading it."""
    store = AccountStore(tmp_path)
    acct = account()
    store.save(acct)
    path = tmp_path / "accounts" / f"{acct.id}.json"
    index_path = tmp_path / "accounts.json"
    done = threading.Event()
    failures: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            for p in (path, index_path):
                try:
                    doc = orjson.loads(p.read_bytes())
                except (orjson.JSONDecodeError, OSError) as e:
                    failures.append(f"{p.name}: {type(e).__name__}")
                else:
                    reads += 1
                    if p is path and doc["email"] != "a@example.com":
                        failures.append("wrong content")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(150):
            acct.raw["custom_label"] = "x" * (300_000 if i % 2 else 10)
            store.save(acct)
    finally:
        done.set()
        thread.join()
    assert failures == []
    assert reads > 0
    assert sorted(p.name for p in (tmp_path / "accounts").iterdir()) == [f"{acct.id}.json"]
