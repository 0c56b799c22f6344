"""What an audit costs: the plan before the first paid request, the spend after, and the budget guard.

* :func:`plan_costs` (``empathy-audit plan SPEC``, and the first lines of ``run``): per model, the
  requests the run will send (the reply requests of the design and the inference probe's, the same
  keys the stages record), how many are already answered in the run directory, prompt tokens
  (the model's tokenizer where one is available offline, else the stated estimate
  :func:`estimate_prompt_tokens`), completion tokens (``max_tokens``, an upper bound, or the mean of
  a pilot's replies as the servers reported them), the cost from the price table and the wall time
  at the spec's rate limits.
* :func:`spend` (results.json ``spend``): the tokens the servers reported for every stored answer and
  their cost.
* :class:`BudgetGuard` (``budget: {usd: ...}`` or ``--max-usd``): the request engine asks it before
  every request; a request whose worst case (prompt estimate + ``max_tokens``) could take the spend
  (reported tokens of everything stored, plus the worst case of the requests in flight) past the
  budget is not sent, the run stops with everything stored and says how to resume.

Prices (USD per million tokens) come from ``audit/data/prices.yaml`` (list prices with their source
and date), overridden by the spec's ``prices:`` (per model name or label) and by ``--price-in`` /
``--price-out``; ``execution: batch`` uses the batch prices (default: half the online price).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from .errors import AuditError
from .resources import DATA_DIR

__all__ = ["Price", "price_table", "price_for", "estimate_prompt_tokens", "count_prompt_tokens", "plan_costs",
           "CostPlan", "spend", "BudgetGuard", "budget_of", "store_budget", "ESTIMATE_NOTE"]

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


# ----------------------------------------------------------------------------- tokens


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The stated estimate of a prompt's tokens: characters / 4 + 8 per message (the request
    engine's rate-limit estimate without the completion)."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + 8 * len(messages)


def _tokenizer(model_name: str | None) -> Any:
    """tiktoken's encoding of an OpenAI model name when tiktoken is installed and its encoding is on
    disk (it is never downloaded here), else None."""
    if not model_name:
        return None
    try:
        import tiktoken  # optional: not a dependency (its encodings are fetched at run time)
    except ImportError:
        return None
    try:
        import os
        import socket

        if not os.environ.get("TIKTOKEN_CACHE_DIR") and not os.environ.get("DATA_GYM_CACHE_DIR"):
            return None  # no cache named: tiktoken would download the encoding
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(0.5)
        try:
            return tiktoken.encoding_for_model(model_name)
        finally:
            socket.setdefaulttimeout(old)
    except Exception:  # noqa: BLE001 - unknown name, no cached file: fall back to the estimate
        return None


def count_prompt_tokens(messages_list: Iterable[list[dict[str, Any]]], model_name: str | None) -> tuple[int, str]:
    """Prompt tokens of all ``messages_list``: (total, how counted)."""
    enc = _tokenizer(model_name)
    total = 0
    if enc is not None:
        for messages in messages_list:  # OpenAI's chat format: 3 tokens per message + 3 for the reply
            total += sum(3 + len(enc.encode(str(m.get("content") or ""))) for m in messages) + 3
        return total, f"tiktoken {enc.name}"
    for messages in messages_list:
        total += estimate_prompt_tokens(messages)
    return total, ESTIMATE_NOTE


# ----------------------------------------------------------------------------- the plan


@dataclass
class CostRow:
    model_label: str
    model_name: str | None
    purpose: str
    requests: int
    cached: int
    prompt_tokens: int
    completion_tokens: float
    tokens_method: str
    completion_method: str
    execution: str
    price: Price | None
    usd: float | None
    wall_s: float | None
    wall_note: str

    @property
    def to_send(self) -> int:
        return self.requests - self.cached


@dataclass
class CostPlan:
    """The result of :func:`plan_costs`: one :class:`CostRow` per model and purpose."""

    rows: list[CostRow]
    run_dir: str
    budget_usd: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_usd(self) -> float | None:
        costs = [r.usd for r in self.rows if r.to_send]
        return None if any(c is None for c in costs) else float(sum(costs))

    def requests_per_model(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.model_label] = out.get(r.model_label, 0) + r.requests
        return out

    def as_dict(self) -> dict[str, Any]:
        return dict(run_dir=self.run_dir, total_usd=self.total_usd, budget_usd=self.budget_usd, notes=self.notes,
                    rows=[dict(model_label=r.model_label, model_name=r.model_name, purpose=r.purpose,
                               requests=r.requests, cached=r.cached, to_send=r.to_send, prompt_tokens=r.prompt_tokens,
                               completion_tokens=r.completion_tokens, tokens_method=r.tokens_method,
                               completion_method=r.completion_method, execution=r.execution,
                               price=r.price.as_dict() if r.price else None, usd=r.usd, wall_s=r.wall_s,
                               wall_note=r.wall_note) for r in self.rows])

    def lines(self) -> list[str]:
        out = [f"plan: {sum(r.requests for r in self.rows)} requests, {sum(r.cached for r in self.rows)} already "
               f"answered in {self.run_dir}, {sum(r.to_send for r in self.rows)} to send"]
        for r in self.rows:
            cost = (f"${r.usd:,.2f}" + (" (batch prices)" if r.execution == "batch" else "")
                    if r.usd is not None else "cost unknown (no price: give prices: in the spec or --price-in/--price-out)")
            out.append(f"  {r.model_label} [{r.purpose}]: {r.requests} requests ({r.cached} cached, {r.to_send} to "
                       f"send); to send: {r.prompt_tokens:,} prompt tokens ({r.tokens_method}) + "
                       f"{r.completion_tokens:,.0f} completion tokens ({r.completion_method}); {cost}; "
                       f"{_duration(r.wall_s)} {r.wall_note}")
        total = self.total_usd
        walls = [r.wall_s for r in self.rows if r.to_send]
        wall = f"; {_duration(sum(walls))} in all" if walls and all(w is not None for w in walls) else ""
        out.append("  total to send: " + (f"${total:,.2f}" if total is not None else "unknown (some model has no price)")
                   + wall
                   + (f"; budget ${self.budget_usd:,.2f}" if self.budget_usd is not None else ""))
        seen = set()
        for r in self.rows:
            if r.price is not None and r.model_label not in seen:
                seen.add(r.model_label)
                out.append(f"  price of {r.model_label}: ${r.price.input:g} / ${r.price.output:g} per million tokens "
                           f"in / out (batch ${r.price.batch_input:g} / ${r.price.batch_output:g}); {r.price.source}")
        out += [f"  note: {n}" for n in self.notes]
        return out


def _duration(s: float | None) -> str:
    if s is None:
        return "wall time unknown"
    if s < 90:
        return f"about {s:.0f} s"
    if s < 5400:
        return f"about {s / 60:.0f} min"
    return f"about {s / 3600:.1f} h"


def _wall(n: int, tokens: float, model: Any) -> tuple[float | None, str]:
    """Seconds for ``n`` requests of ``tokens`` tokens at the model's rate limits."""
    if getattr(model, "execution", "online") == "batch":
        return None, f"(batch service: within its {model.batch.completion_window} window)"
    waits = []
    if model.requests_per_minute:
        waits.append(60.0 * n / model.requests_per_minute)
    if model.tokens_per_minute:
        waits.append(60.0 * tokens / model.tokens_per_minute)
    if not waits:
        return None, f"(no rate limit in the spec: bounded by the server, {model.max_in_flight} in flight)"
    return max(waits), "at the spec's rate limits"


def _planned(spec: Any) -> list[tuple[Any, Any, str, list[dict[str, Any]], int | None]]:
    """(model, decoding, purpose, items, base seed) of every request the empathy suite's stages send
    (the probe sends without the spec's seed: :func:`audit.scorers.probe.run_probe`)."""
    from .counterfactual import build_variants
    from .generate import reply_items
    from .prompts import styles_for_spec

    variants = build_variants(spec)
    styles = styles_for_spec(spec)
    out = [(m, spec.decoding, "reply", list(reply_items(variants, styles, spec.samples)), spec.seed)
           for m in spec.models]
    if spec.scoring.inference_probe:
        from .scorers.probe import load_questions, probe_setup, with_response_format

        qs = load_questions(None)
        axes = [a for a in qs.axes if a in variants.columns and variants[a].notna().any()]
        if axes:
            options = {a: sorted({str(x) for x in variants[a].dropna()}) for a in axes
                       if qs.axes[a].kind == "categorical"}
            qs = qs.for_axes(axes, options)
            model, decoding, rf = probe_setup(spec)
            model = with_response_format(model, rf, qs.schema(), "demographic_probe")
            out.append((model, decoding, "probe",
                        [{"purpose": "probe", "variant_id": v, "messages": qs.messages(t)}
                         for v, t in zip(variants["variant_id"], variants["text"])], None))  # no base seed
    return out


def plan_costs(spec: Any, run_dir: Any = None, *, pilot: int = 0, price_in: float | None = None,
               price_out: float | None = None, max_usd: float | None = None, progress: bool = False,
               store: Any = None) -> CostPlan:
    """The cost plan of ``spec`` in ``run_dir`` (module docstring). ``pilot``: first send that many
    reply requests per online model (stored in the run directory, so the run reuses them) and take the
    completion tokens from their reported usage instead of ``max_tokens``."""
    from pathlib import Path

    from .generate import _identity
    from .engine import planned_keys
    from .store import STORE_FILENAME, RunStore

    if getattr(spec, "suite", "empathy") != "empathy":
        raise AuditError(f"plan covers the empathy suite; this spec is a {spec.suite} audit",
                         where=str(spec.source_path or "the spec"), fix="plan an empathy spec")
    rd = Path(spec.run_dir(run_dir))
    planned = _planned(spec)
    pilot_means: dict[str, float] = {}
    if pilot:
        pilot_means = _pilot(spec, rd, planned, pilot, progress)
    own = store is None and (rd / STORE_FILENAME).exists()
    rows, notes = [], []
    if own:
        store = RunStore(rd, create=False)
    try:
        for model, decoding, purpose, items, seed in planned:
            keys = list(planned_keys(model, decoding, items, base_seed=seed, identity=_identity(model)))
            answered = store.answered_among(keys) if store is not None else set()
            todo = [it for k, it in zip(keys, items) if k not in answered]
            n_keys = len(dict.fromkeys(keys))  # identical requests are sent once
            ptok, how = count_prompt_tokens((it["messages"] for it in todo), model.model)
            if purpose == "reply" and model.label in pilot_means:
                ctok, chow = pilot_means[model.label] * len(todo), f"pilot mean {pilot_means[model.label]:.1f} per reply"
            else:
                ctok, chow = float(decoding.max_tokens * len(todo)), f"max_tokens {decoding.max_tokens}, an upper bound"
            price = None if model.is_embedded else price_for(model, spec, price_in=price_in, price_out=price_out)
            usd = 0.0 if model.is_embedded else (price.cost(ptok, ctok, batch=model.execution == "batch")
                                                 if price else None)
            wall, wnote = _wall(len(todo), ptok + ctok, model)
            rows.append(CostRow(model.label, model.model, purpose, n_keys, len(answered), ptok, ctok, how, chow,
                                model.execution, price, usd, wall, wnote))
    finally:
        if own:
            store.close()
    if any(r.model_label == "embedded" for r in rows):
        notes.append("the embedded model runs locally: no price")
    return CostPlan(rows, str(rd), max_usd if max_usd is not None else budget_of(spec), notes)


def _pilot(spec: Any, rd: Any, planned: list, n: int, progress: bool) -> dict[str, float]:
    """Send the first ``n`` reply requests of each online model (stored; the run reuses them) and
    return each model's mean completion tokens as its server reported them."""
    from .engine import complete
    from .generate import check_models
    from .store import RunStore

    check_models(spec)
    means: dict[str, float] = {}
    with RunStore(rd) as store:
        for model, decoding, purpose, items, _seed in planned:
            if purpose != "reply" or model.execution == "batch":
                continue
            summary = complete(store, model, decoding, items[:n], progress=progress, base_seed=spec.seed,
                               description=f"pilot [{model.label}]")
            toks = [u["completion_tokens"] for u in store.usage_of(summary.request_keys)
                    if u["completion_tokens"] is not None]
            if toks:
                means[model.label] = sum(toks) / len(toks)
    return means


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
    if spec.scoring.probe_model is not None:
        pm = spec.scoring.probe_model.model
        p = None if pm.is_embedded else price_for(pm, spec, price_in=price_in, price_out=price_out)
        prices[pm.label] = p.as_dict() if p else dict(input=0, output=0, batch_input=0, batch_output=0,
                                                       source="unpriced")
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
