"""Prices, the spend of a run and its budget guard (the low layer of :mod:`audit.costs`).

Prices (USD per million tokens) come from ``audit/data/prices.yaml`` (list prices with their source
and date), overridden by the spec's ``prices:`` (per model name or label) and by ``--price-in`` /
``--price-out``; ``execution: batch`` uses the batch prices (default: half the online price).

* :func:`spend` (results.json ``spend``): the tokens the servers reported for every stored answer
  (their usage fields) and their cost.
* :class:`BudgetGuard` (``budget: {usd: ...}`` or ``--max-usd``): the request engine asks it before
  every request; a request whose worst case (prompt estimate + ``max_tokens``) could take the spend
  (reported tokens of everything stored, plus the worst case of the requests in flight) past the
  budget is not sent; the run stops with everything stored and says how to resume. A batch whose
  worst case could pass it is not uploaded (:mod:`audit.batch`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import AuditError
from .resources import DATA_DIR

__all__ = ["Price", "price_table", "price_for", "estimate_prompt_tokens", "spend", "BudgetGuard", "budget_of",
           "store_budget"]

PRICES_FILE = DATA_DIR / "prices.yaml"
ESTIMATE_NOTE = "estimate: characters / 4 + 8 per message (no tokenizer for this model offline)"


@dataclass(frozen=True)
class Price:
    """USD per million tokens, online and through a batch service; ``source`` says where it is from."""

    input: float
    output: float
    batch_input: float
    batch_output: float
    source: str

    def cost(self, prompt_tokens: float, completion_tokens: float, *, batch: bool = False) -> float:
        pin, pout = (self.batch_input, self.batch_output) if batch else (self.input, self.output)
        return (prompt_tokens * pin + completion_tokens * pout) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return dict(input=self.input, output=self.output, batch_input=self.batch_input,
                    batch_output=self.batch_output, source=self.source)


def price_table() -> tuple[dict[str, dict[str, float]], str]:
    """The built-in price table (model name -> prices) and its source line."""
    data = yaml.safe_load(PRICES_FILE.read_text(encoding="utf-8"))
    return dict(data["models"]), str(data.get("source", PRICES_FILE.name))


def _mk(p: dict[str, Any] | Any, source: str) -> Price:
    g = p.get if isinstance(p, dict) else (lambda k, d=None: getattr(p, k, d))
    pin, pout = float(g("input")), float(g("output"))
    bi, bo = g("batch_input"), g("batch_output")
    return Price(pin, pout, float(bi) if bi is not None else pin / 2, float(bo) if bo is not None else pout / 2,
                 source)


def check_price_pair(price_in: float | None, price_out: float | None) -> None:
    """``--price-in`` and ``--price-out`` come together or not at all."""
    if (price_in is None) != (price_out is None):
        raise AuditError("give both --price-in and --price-out (USD per million tokens)", where="command line",
                         fix="e.g. --price-in 0.15 --price-out 0.6")


def price_for(model: Any, spec: Any = None, *, price_in: float | None = None,
              price_out: float | None = None) -> Price | None:
    """The price of ``model`` (a ModelSpec): ``--price-in/--price-out`` (both, for every model), else
    the spec's ``prices`` by label or model name, else the built-in table by exact name or longest
    prefix; None when none applies (the embedded model, an unknown name)."""
    if price_in is not None or price_out is not None:
        if price_in is None or price_out is None:
            raise AuditError("give both --price-in and --price-out (USD per million tokens)", where="command line",
                             fix="e.g. --price-in 0.15 --price-out 0.6")
        return Price(price_in, price_out, price_in / 2, price_out / 2, "command line (--price-in/--price-out)")
    prices = getattr(spec, "prices", None) or {}
    for key in (model.label, model.model):
        if key and key in prices:
            return _mk(prices[key], f"spec prices[{key}]")
    if not model.model:
        return None
    table, source = price_table()
    name = str(model.model)
    hits = [k for k in table if name == k or name.startswith(k + "-")]
    if not hits:
        return None
    best = max(hits, key=len)
    return _mk(table[best], f"{source} ({best})")


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The stated estimate of a prompt's tokens: characters / 4 + 8 per message (the request
    engine's rate-limit estimate without the completion)."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + 8 * len(messages)


# ----------------------------------------------------------------------------- spend


def spend(store: Any, spec: Any, *, price_in: float | None = None, price_out: float | None = None
          ) -> dict[str, Any] | None:
    """results.json ``spend``: per model label and purpose the requests, the tokens the servers
    reported and their cost; None when no model of the spec has a price and no budget is set (a run
    that never dealt in money keeps its results.json as it was)."""
    if spec is None:
        return None
    models = {m.label: m for m in spec.models}
    raw = store.get_meta("budget")
    if raw:  # the prices the run's budget was counted with (command-line prices included)
        b = json.loads(raw)
        prices = {lab: _mk(p, p.get("source", "run budget")) for lab, p in b["prices"].items()}
    else:
        prices = {lab: price_for(m, spec, price_in=price_in, price_out=price_out) for lab, m in models.items()
                  if not m.is_embedded}
    if not any(prices.values()) and budget_of(spec) is None and not raw:
        return None
    rows = []
    for t in store.token_totals():
        p = prices.get(t["model_label"])
        usd = p.cost(t["prompt_tokens"], t["completion_tokens"], batch=t["batched"]) if p else None
        rows.append(dict(t, usd=usd, price=p.as_dict() if p else None))
    known = [r["usd"] for r in rows if r["usd"] is not None]
    return dict(rows=rows, total_usd=float(sum(known)) if known else 0.0,
                complete=all(r["usd"] is not None for r in rows),
                budget_usd=json.loads(raw)["usd"] if raw else budget_of(spec),
                tokens_from="the usage fields of the servers' answers (prompt_tokens, completion_tokens)")


def budget_of(spec: Any) -> float | None:
    b = getattr(spec, "budget", None)
    return float(b.usd) if b is not None else None


# ----------------------------------------------------------------------------- the budget guard


def store_budget(store: Any, spec: Any, max_usd: float | None, *, price_in: float | None = None,
                 price_out: float | None = None) -> None:
    """Record the run's budget and every model's price in the store's meta (``budget``), where the
    request engine's :class:`BudgetGuard` reads them; removed when there is no budget."""
    check_price_pair(price_in, price_out)
    usd = max_usd if max_usd is not None else budget_of(spec)
    if usd is None:
        store.delete_meta("budget")
        return
    prices = {}
    for m in spec.models:
        p = None if m.is_embedded else price_for(m, spec, price_in=price_in, price_out=price_out)
        if p is None and not m.is_embedded:
            raise AuditError(f"a budget is set but model '{m.label}' ({m.model}) has no price, so its spend cannot "
                             "be counted", where="spec key budget",
                             fix=f"give its price: prices: {{{m.model or m.label}: {{input: ..., output: ...}}}} in "
                                 "the spec (USD per million tokens), or --price-in/--price-out")
        prices[m.label] = p.as_dict() if p else dict(input=0, output=0, batch_input=0, batch_output=0, source="local")
    scoring = getattr(spec, "scoring", None)
    extra = [scoring.probe_model, scoring.judge if "llm-judge" in scoring.scorers else None] if scoring else []
    for judge in extra:  # the probe's and the judge's models are paid too
        if judge is None or judge.model.label in prices:
            continue
        jm = judge.model
        p = None if jm.is_embedded else price_for(jm, spec, price_in=price_in, price_out=price_out)
        if p is None and not jm.is_embedded:
            raise AuditError(f"a budget is set but the model '{jm.label}' ({jm.model}) of the probe or judge has no "
                             "price", where="spec key budget",
                             fix=f"give its price: prices: {{{jm.model or jm.label}: {{input: ..., output: ...}}}}")
        prices[jm.label] = p.as_dict() if p else dict(input=0, output=0, batch_input=0, batch_output=0,
                                                       source="local")
    store.set_meta("budget", json.dumps(dict(usd=float(usd), prices=prices), sort_keys=True))


class BudgetGuard:
    """Keeps a run's spend within its budget (module docstring). One per engine pass; ``None`` from
    :meth:`from_store` when the run has no budget."""

    def __init__(self, usd: float, prices: dict[str, dict[str, float]], spent: float, label: str):
        self.usd = usd
        self.prices = prices
        self.spent = spent
        self.reserved = 0.0
        self.label = label
        self.refused: float | None = None

    @classmethod
    def from_store(cls, store: Any, label: str) -> "BudgetGuard | None":
        raw = store.get_meta("budget")
        if not raw:
            return None
        b = json.loads(raw)
        prices = b["prices"]
        spent = 0.0
        for t in store.token_totals():
            p = prices.get(t["model_label"])
            if p:
                spent += _cost(p, t["prompt_tokens"], t["completion_tokens"], t["batched"])
        return cls(float(b["usd"]), prices, spent, label)

    def worst_case(self, prompt_tokens: int, max_tokens: int, *, batch: bool = False) -> float:
        p = self.prices.get(self.label)
        return _cost(p, prompt_tokens, max_tokens, batch) if p else 0.0

    def acquire(self, cost: float) -> bool:
        """Reserve ``cost`` for a request about to be sent; False (nothing reserved) when the spend so
        far, the requests in flight and this one could exceed the budget."""
        if self.spent + self.reserved + cost > self.usd + 1e-12:
            self.refused = cost
            return False
        self.reserved += cost
        return True

    def settle(self, reserved: float, prompt_tokens: int | None, completion_tokens: int | None,
               *, batch: bool = False) -> None:
        """A request answered (or failed): release its reservation, count what it reported."""
        self.reserved = max(self.reserved - reserved, 0.0)
        p = self.prices.get(self.label)
        if p:
            self.spent += _cost(p, prompt_tokens or 0, completion_tokens or 0, batch)

    def error(self, sent: int) -> AuditError:
        more = max(self.usd * 2, math.ceil(self.spent + (self.refused or 0) + 1))
        return AuditError(
            f"budget reached: ${self.spent:,.4f} spent of ${self.usd:,.4f} (tokens reported by the server); the next "
            f"request to '{self.label}' could cost up to ${self.refused or 0:,.4f}, so it was not sent ({sent} sent in "
            "this pass)", where="budget",
            fix=f"everything answered is stored and is not sent again: run the same command with a higher budget, "
                f"e.g. --max-usd {more:g} (or budget: {{usd: {more:g}}} in the spec)")


def _cost(p: dict[str, float], prompt: float, completion: float, batch: bool) -> float:
    pin = p.get("batch_input", p["input"] / 2) if batch else p["input"]
    pout = p.get("batch_output", p["output"] / 2) if batch else p["output"]
    return (prompt * pin + completion * pout) / 1e6
