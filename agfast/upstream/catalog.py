"""What the pool can call: the models its accounts offer, what Google says each can do, and whether that
knowledge is complete (every account's model list fetched). Derived once per pool change, read per request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agfast.convert.models import ModelSpec, cautious_spec, described_spec, model_spec
from agfast.upstream.accounts import Account, QuotaModel


@dataclass(frozen=True, slots=True)
class Catalog:
    offered: frozenset[str] = frozenset()
    # False while the pool is empty or some account's model list has not been fetched yet: then a name no
    # list mentions may still be offered, and the static tables decide (convert.models.route_known).
    complete: bool = False
    described: dict[str, ModelSpec] = field(default_factory=dict)
    # One account's full record per offered model (display name, context window) for the model lists.
    records: dict[str, QuotaModel] = field(default_factory=dict)

    def spec(self, model: str) -> ModelSpec:
        """Google's description of `model` when an account gave one, else the static table's."""
        found = self.described.get(model)
        return found if found is not None else model_spec(model)


def catalog_of(accounts: Iterable[Account]) -> Catalog:
    offered: set[str] = set()
    described: dict[str, ModelSpec] = {}
    records: dict[str, QuotaModel] = {}
    complete = True
    seen = False
    for account in accounts:
        seen = True
        models = account.quota_models
        if not models:
            complete = False
        for m in models:
            offered.add(m.name)
            records.setdefault(m.name, m)
            spec = described_spec(m.name, m.supports_thinking, m.thinking_budget, m.max_output_tokens)
            known = described.get(m.name)
            described[m.name] = spec if known is None else cautious_spec(known, spec)
    return Catalog(frozenset(offered), complete and seen, described, records)
