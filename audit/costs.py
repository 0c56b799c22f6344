"""What an audit costs: the plan before the first paid request, the spend after, and the budget guard.

* :func:`plan_costs` (``empathy-audit plan SPEC``, and the first lines of ``run``): per model, the
  requests the run will send (the reply requests of the design and the inference probe's, the same
  keys the stages record), how many are already answered in the run directory, prompt tokens
  (the model's tokenizer where one is available offline, else the stated estimate
  :func:`estimate_prompt_tokens`), completion tokens (``max_tokens``, an upper bound, or the mean of
  a pilot's replies as the servers reported them), the cost from the price table and the wall time
  at the spec's rate limits.
* :func:`spend`, :class:`BudgetGuard` and the prices live one layer down, in :mod:`audit.budget`
  (the request engine uses them), and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .budget import (BudgetGuard, Price, budget_of, estimate_prompt_tokens, price_for, price_table, spend,
                     store_budget)
from .errors import AuditError

__all__ = ["Price", "price_table", "price_for", "estimate_prompt_tokens", "count_prompt_tokens", "plan_costs",
           "CostPlan", "spend", "BudgetGuard", "budget_of", "store_budget", "ESTIMATE_NOTE"]

ESTIMATE_NOTE = "estimate: characters / 4 + 8 per message (no tokenizer for this model offline)"


# ----------------------------------------------------------------------------- tokens


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

    from .budget import check_price_pair

    check_price_pair(price_in, price_out)
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
    if "llm-judge" in spec.scoring.scorers:
        notes.append("not in this plan: the llm-judge scorer's requests (one per answered reply, to the judge "
                     "model; their prompts hold the replies, unknown before they arrive); the budget guard counts them")
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


