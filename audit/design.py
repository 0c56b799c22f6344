"""A run directory is one audit: what defines its design, and what a rerun may change.

The *design* of an audit is everything that decides which requests are sent and how their answers
are scored and analysed: the variants (posts and filters, templates, cues, demographics: all of it
is in the variants' content hashes), the prompt styles (their text hashes), the models (endpoint,
model name, label, extra request parameters), decoding, samples, seed, scorers and analysis
settings. Rate limits, timeouts, concurrency and the name of the key variable are not: they change
how requests are sent, not which.

:func:`design_of` describes a spec's design as a flat ``{key: value}`` mapping; :func:`compare`
tells how a new design relates to the one a run directory holds:

- the same: the run resumes;
- an extension (more samples, added scorers, changed analysis settings): work is added or refitted
  on top of what is stored, and the run says so;
- anything else is a different audit: refused, unless the user asks to ``--reuse`` the stored
  replies that the new design also asks for. Every stage then works on the rows of the current
  design only (:meth:`audit.store.RunStore.replies_df` filters by it), never on everything stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .store import canonical_json

# Model fields that only change how requests are sent, not which requests: not part of the design.
_TRANSPORT_FIELDS = {"api_key_env", "headers", "max_in_flight", "requests_per_minute", "tokens_per_minute",
                     "timeout_s", "max_retries"}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def design_of(spec: Any, variant_ids: list[str], style_hashes: dict[str, str]) -> dict[str, Any]:
    """The design of ``spec`` as a flat mapping of dotted keys to JSON values.

    ``variant_ids`` are the ids of the design's variants (content hashes: a changed post, filter,
    template or cue changes them); ``style_hashes`` the hash of each prompt style's text.
    """
    models = {}
    for m in spec.models:
        d = m.model_dump(mode="json", exclude=_TRANSPORT_FIELDS)
        models[d.pop("label")] = d
    doc = {
        "posts": spec.posts.model_dump(mode="json"),
        "demographics": spec.demographics.model_dump(mode="json"),
        "variants": {"count": len(variant_ids),
                     "sha256": hashlib.sha256("\n".join(sorted(variant_ids)).encode()).hexdigest()},
        "styles": dict(style_hashes),
        "models": models,
        "decoding": spec.decoding.model_dump(mode="json"),
        "samples": spec.samples,
        "seed": spec.seed,
        "scoring": spec.scoring.model_dump(mode="json"),
        "analysis": spec.analysis.model_dump(mode="json"),
    }
    suite = getattr(spec, "suite", "empathy")
    if suite != "empathy":  # another suite's settings decide its requests (empathy designs keep their ids)
        doc["suite"] = suite
        doc[suite] = getattr(spec, suite).model_dump(mode="json")
    return _flatten(json.loads(canonical_json(doc)))


def design_id(design: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the design's canonical JSON."""
    return hashlib.sha256(canonical_json(design).encode()).hexdigest()[:16]


@dataclass
class DesignChange:
    """How a new design relates to a stored one: the keys that differ, split into extensions and
    changes that make it another audit."""

    extends: list[str] = field(default_factory=list)   # sentences: what is added on top of the stored run
    differs: list[str] = field(default_factory=list)   # sentences: what makes it another audit

    @property
    def same(self) -> bool:
        return not self.extends and not self.differs


def _show(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def compare(stored: dict[str, Any], current: dict[str, Any]) -> DesignChange:
    """Compare a run's stored design with the current one (both from :func:`design_of`)."""
    change = DesignChange()
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    # changed variants are explained by changed posts or demographics keys when there are any
    spec_explains_variants = any(k.startswith(("posts.", "demographics.")) for k in changed)
    for key in changed:
        old, new = stored.get(key), current.get(key)
        line = f"{key}: {_show(old)} -> {_show(new)}"
        if key == "samples" and isinstance(old, int) and isinstance(new, int) and new > old:
            change.extends.append(f"samples {old} -> {new} (the new samples are added)")
        elif key == "scoring.scorers" and isinstance(old, list) and isinstance(new, list) and set(old) < set(new):
            change.extends.append("scorers " + ", ".join(s for s in new if s not in old) + " added")
        elif key.startswith("analysis."):
            change.extends.append(f"{line} (the analysis is refitted)")
        elif key.startswith("variants."):
            if not spec_explains_variants:
                change.differs.append(f"{line} (the corpus or the templates changed)")
        else:
            change.differs.append(line)
    return change




def bind(store: Any, spec: Any, variant_ids: list[str], *, reuse: bool = False) -> DesignChange:
    """Bind the run in ``store`` to the design of ``spec`` (whose variants have ``variant_ids``).

    A store without a design (new, or written before designs were recorded) takes this one. A store
    bound to another design is refused with one :class:`~audit.errors.AuditError` saying what
    differs, unless the change only extends the run or ``reuse`` is set. Returns the change.
    """
    from .errors import AuditError
    from .prompts import styles_for_spec

    styles = {name: s.style_hash for name, s in styles_for_spec(spec).items()}
    current = design_of(spec, variant_ids, styles)
    _, stored = store.current_design()
    change = compare(stored, current) if stored is not None else DesignChange()
    if change.differs and not reuse:
        shown = "; ".join(change.differs[:4]) + (f"; and {len(change.differs) - 4} more" if len(change.differs) > 4
                                                 else "")
        raise AuditError(
            f"this run directory holds another audit design (differs in {shown})", where=str(store.run_dir),
            fix="give the new design its own run directory (--out), or add --reuse to keep the stored replies "
                "that the new design also asks for (the analysis, report and exports then use only the new "
                "design's rows)")
    store.bind_design(design_id(current), current)
    return change


def bind_variants(ctx: Any, variants: Any) -> tuple[DesignChange, int]:
    """The first stage of every suite: bind the run to ``ctx.spec``'s design (:func:`bind`; another
    design is refused unless the run option ``reuse``), say through ``ctx`` how the run relates to the
    stored one (:func:`describe`) and store ``variants``. Returns the change and the new variants."""
    reuse = bool(ctx.options.get("reuse"))
    change = bind(ctx.store, ctx.spec, variants["variant_id"].tolist(), reuse=reuse)
    for line in describe(change, reuse):
        ctx.say(line)
    return change, ctx.store.put_variants(variants)


def describe(change: DesignChange, reuse: bool) -> list[str]:
    """Lines that say how a rerun relates to the stored run (none when the design is the same)."""
    out = []
    if change.extends:
        out.append("extending the run: " + "; ".join(change.extends))
    if change.differs and reuse:
        out.append("reusing the stored replies of another design (--reuse); this run analyses only the current "
                   "design's rows. Changed: " + "; ".join(change.differs))
    return out


__all__ = ["DesignChange", "bind", "compare", "describe", "design_id", "design_of"]


def check_before_sending(spec: Any, variants: Any) -> None:
    """Every check that needs only the spec and its variants, made before the first paid request:
    the analysis reference groups exist in the design, and every scorer (with its judge settings)
    can be built. Raises one :class:`~audit.errors.AuditError` with the fix."""
    from .errors import AuditError
    from .scorers import get_scorer
    from .spec import spec_where

    groups = sorted(set(variants["group"]) - {"control"})
    for i, ref in enumerate([spec.analysis.reference, *spec.analysis.extra_references]):
        if ref != "control" and ref not in groups:
            key = ("analysis", "reference") if i == 0 else ("analysis", "extra_references", i - 1)
            raise AuditError(
                f"analysis reference '{ref}' is not a group of this audit", where=spec_where(spec, key),
                fix="use 'control' or one of the groups: " + ", ".join(groups))
    if spec.analysis.reference_group:
        from .stats.disparity import reference_map

        axes = [a for a in spec.demographics.axes if a in variants.columns]
        ga = variants[variants["group"] != "control"].drop_duplicates("group").set_index("group")[axes] if axes else None
        reference_map(groups, spec.analysis.reference_group, ga,
                      where=spec_where(spec, ("analysis", "reference_group")))
    for name in dict.fromkeys(spec.scoring.scorers):
        get_scorer(name, spec)
