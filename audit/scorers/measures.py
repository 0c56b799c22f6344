"""What a scorer's measures mean: a :class:`Measure` declaration per measure, and the catalog that
resolves an outcome name (``"scorer.measure"``) to its declaration.

Each scorer declares its measures where the scorer is defined (``declared_measures``); the
declaration travels with the scorer's ``info()`` into the run store (``scorer_info``, key
``measures``), so that the statistics and the report read labels, kinds and scales from the run
itself, also for a scorer from a third-party package.

>>> m = Measure("ER", "Emotional Reactions", kind="ordinal", range=(0, 2), higher_is="more empathic")
>>> any_level(m).label, any_level(m).kind, any_level(m).gap_unit
('share of replies with any Emotional Reactions', 'binary', 'percentage points')

How a gap is stated (``gap_unit``):

- ``relative``: as a share of the control mean, ``(mean_group - mean_control) / mean_control``
  (falls back to points where the control mean is 0 or missing);
- ``points``: the absolute difference of means, in the measure's own units (e.g. a sentiment score
  centred near 0, where a relative gap would mislead);
- ``percentage points``: the absolute difference of proportions times 100 (binary measures only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Iterable, Mapping

from ..errors import AuditError

KINDS = ("ordinal", "binary", "continuous")
GAP_UNITS = ("relative", "points", "percentage points")
#: Suffix of the derived binary outcome "level > 0" of an ordinal measure (see :func:`any_level`).
ANY_LEVEL = ">0"


#: Kinds of text a measure's validity evidence was gathered on.
TEXT_KINDS = ("human peer replies", "LLM replies", "none")


@dataclass(frozen=True)
class Evidence:
    """A measure's validity evidence: how well it agrees with human judgement, and where that was checked.

    - ``data``: the data it was checked on ("Reddit peer-support replies, EPITOME corpus (Sharma et
      al. 2020), 5-fold CV grouped by post");
    - ``text``: the kind of text (one of :data:`TEXT_KINDS`): agreement on human peer replies says
      little about LLM replies, which are longer and more formulaic;
    - ``statistic`` and ``agreement``: the agreement figure (e.g. quadratic-weighted kappa 0.65), or
      None where the measure has none of its own (a composite of measures of unequal validity);
    - ``n``: labelled items behind the figure;
    - ``note``: one plain sentence a report may add.

    The report reads it to choose the default primary outcome (:func:`audit.report.headline.primary_outcome`:
    the measure with the strongest evidence, never a composite) and to state, for the headline
    measure, what its validity rests on.
    """

    data: str
    text: str = "none"
    statistic: str = ""
    agreement: float | None = None
    n: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.text not in TEXT_KINDS:
            raise AuditError(f"evidence text kind {self.text!r} is not one of {', '.join(TEXT_KINDS)}",
                             where="measure evidence", fix="declare text='human peer replies', 'LLM replies' or 'none'")

    @property
    def strength(self) -> float:
        """The agreement figure for ranking measures (-inf without one): evidence on LLM replies first."""
        if self.agreement is None or not math.isfinite(float(self.agreement)):
            return -math.inf
        return float(self.agreement) + (10.0 if self.text == "LLM replies" else 0.0)

    def sentence(self) -> str:
        """The evidence in one sentence (no trailing period)."""
        if self.agreement is None:
            return f"no agreement figure of its own ({self.data})"
        n = f", n = {self.n:,}" if self.n else ""
        note = f"; {self.note}" if self.note else ""
        return (f"{self.statistic} {float(self.agreement):.2f} against human labels on {self.text} "
                f"({self.data}{n}{note})")


@dataclass(frozen=True)
class Measure:
    """One measure of a scorer, declared by the scorer.

    - ``name``: the column ``score()`` returns and the ``measure`` stored in ``scores``;
    - ``label``: how a report names it ("Emotional Reactions");
    - ``kind``: ``ordinal`` (levels, e.g. 0/1/2), ``binary`` (0/1) or ``continuous``;
    - ``range``: ``(min, max)`` of the values, or None when unbounded;
    - ``higher_is``: what a higher value means ("more empathic"), or None;
    - ``gap_unit``: ``relative``, ``points`` or ``percentage points`` (default: percentage points for
      a binary measure, relative otherwise);
    - ``short``: a short label for tight places (example cards), default ``label``;
    - ``decimals``: decimals when one score is shown;
    - ``evidence``: its validity evidence (:class:`Evidence`), or None when none is declared.
    """

    name: str
    label: str
    kind: str = "continuous"
    range: tuple[float, float] | None = None
    higher_is: str | None = None
    gap_unit: str = ""
    short: str | None = None
    decimals: int = 2
    evidence: Evidence | None = None

    def __post_init__(self) -> None:
        where = f"measure {self.name!r}"
        if not isinstance(self.name, str) or not self.name or "." in self.name:
            raise AuditError(f"a measure name must be non-empty text without '.', not {self.name!r}", where=where,
                             fix="name the measure as the column score() returns, e.g. 'warmth'")
        if not isinstance(self.label, str) or not self.label.strip():
            raise AuditError("a measure needs a label", where=where, fix="give label='...' as a report should name it")
        if self.kind not in KINDS:
            raise AuditError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}", where=where,
                             fix="declare kind='ordinal', 'binary' or 'continuous'")
        if self.range is not None:
            try:
                lo, hi = (float(x) for x in self.range)
            except (TypeError, ValueError):
                raise AuditError(f"range {self.range!r} is not (min, max)", where=where,
                                 fix="give range=(min, max) as two numbers, or None") from None
            if not lo < hi:
                raise AuditError(f"range {self.range!r}: min must be below max", where=where, fix="give range=(min, max)")
            object.__setattr__(self, "range", (lo, hi))
        unit = self.gap_unit or ("percentage points" if self.kind == "binary" else "relative")
        if unit not in GAP_UNITS:
            raise AuditError(f"gap_unit {self.gap_unit!r} is not one of {', '.join(GAP_UNITS)}", where=where,
                             fix="declare gap_unit='relative', 'points' or 'percentage points'")
        if unit == "percentage points" and self.kind != "binary":
            raise AuditError("gap_unit 'percentage points' is for binary (0/1) measures", where=where,
                             fix="declare kind='binary', or gap_unit='points'")
        object.__setattr__(self, "gap_unit", unit)

    @property
    def short_label(self) -> str:
        return self.short or self.label

    @property
    def absolute_scale(self) -> tuple[float, str]:
        """(factor, unit) of a gap stated absolutely: proportions in percentage points, else points."""
        return (100.0, "percentage points") if self.kind == "binary" else (1.0, "points")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["range"] = list(self.range) if self.range is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "measure") -> Measure:
        """A declaration from its stored form (:meth:`as_dict`); unknown keys are ignored (newer stores)."""
        if not isinstance(d, Mapping) or "name" not in d or "label" not in d:
            raise AuditError(f"a stored measure declaration needs 'name' and 'label', not {d!r}", where=where,
                             fix="re-score the run with a scorer that declares its measures")
        known = {k: d[k] for k in ("name", "label", "kind", "range", "higher_is", "gap_unit", "short", "decimals",
                                   "evidence") if k in d and d[k] is not None}
        if "range" in known:
            known["range"] = tuple(known["range"])
        if "evidence" in known:
            ev = known["evidence"]
            if not isinstance(ev, Mapping) or "data" not in ev:
                raise AuditError(f"a stored measure's evidence needs 'data', not {ev!r}", where=where,
                                 fix="declare evidence=Evidence(data=..., text=..., statistic=..., agreement=...)")
            known["evidence"] = Evidence(**{k: ev[k] for k in ("data", "text", "statistic", "agreement", "n", "note")
                                            if k in ev})
        return cls(**known)


def measure_dicts(measures: Iterable[Measure]) -> list[dict[str, Any]]:
    """The stored form of a scorer's declarations: put it into ``info()['measures']``."""
    return [m.as_dict() for m in measures]


def names(measures: Iterable[Measure]) -> tuple[str, ...]:
    """The measure names (what ``Scorer.measures`` holds)."""
    return tuple(m.name for m in measures)


def any_level(m: Measure) -> Measure:
    """The derived binary outcome "level > 0" of an ordinal measure (name ``<name>>0``): the share of
    replies that show the mechanism at all (EPITOME: weak or strong)."""
    return Measure(f"{m.name}{ANY_LEVEL}", f"share of replies with any {m.label}", kind="binary", range=(0, 1),
                   higher_is=m.higher_is, gap_unit="percentage points")


def _generic(measure: str, scorer: str | None) -> Measure:
    """An undeclared measure: its name (and scorer), continuous, gap relative to the control."""
    return Measure(measure, f"{measure} ({scorer})" if scorer else measure)


class MeasureCatalog:
    """Declarations of the measures of a run, by scorer, resolving outcome names for stats and reports.

    Built from a run's ``scorer_info`` (:meth:`from_scorer_info`): a scorer's stored declaration wins;
    a scorer stored before declarations existed (no ``measures`` key) falls back to the built-in
    declaration of that name. The built-in scorers are always known, in registry order, then the
    run's other scorers by name.

    A label names one measure: when a later scorer declares a label an earlier one already uses (the
    llm-judge's "Emotional Reactions" after the epitome scorer's), the later one is shown as
    "Emotional Reactions (llm-judge)".
    """

    def __init__(self, declared: Mapping[str, Iterable[Measure]]):
        self._by_scorer: dict[str, dict[str, Measure]] = {}
        seen: set[str] = set()
        for scorer, measures in declared.items():
            out = {}
            for m in measures:
                label = m.label if m.label not in seen else f"{m.label} ({scorer})"
                seen.add(m.label)
                out[m.name] = replace(m, label=label) if label != m.label else m
            self._by_scorer[scorer] = out
        order: list[str] = []
        for ms in self._by_scorer.values():
            order.extend(n for n in ms if n not in order)
        self._order = order

    @classmethod
    def from_scorer_info(cls, scorer_info: Mapping[str, Mapping[str, Any]] | None) -> MeasureCatalog:
        from .registry import builtin_measures, builtin_names

        scorer_info = scorer_info or {}
        declared: dict[str, tuple[Measure, ...]] = {}
        for name in [*builtin_names(), *sorted(set(scorer_info) - set(builtin_names()))]:
            raw = (scorer_info.get(name) or {}).get("measures")
            if isinstance(raw, list) and raw and all(isinstance(d, Mapping) for d in raw):
                declared[name] = tuple(Measure.from_dict(d, where=f"scorer_info of {name!r}") for d in raw)
                if name in builtin_names():  # stored before measures declared evidence: the built-in's
                    ev = {m.name: m.evidence for m in builtin_measures(name)}
                    declared[name] = tuple(replace(m, evidence=ev.get(m.name)) if m.evidence is None else m
                                           for m in declared[name])
            elif name in builtin_names():
                declared[name] = builtin_measures(name)
        return cls(declared)

    def declared(self, outcome: str) -> Measure | None:
        """The declaration of ``outcome`` (``scorer.measure``, a bare measure name, or a derived
        ``<outcome>>0``), or None when no scorer declared it."""
        outcome = str(outcome)
        scorer, _, measure = outcome.rpartition(".")
        if measure.endswith(ANY_LEVEL) and len(measure) > len(ANY_LEVEL):
            base = self.declared(outcome[:-len(ANY_LEVEL)])
            return any_level(base) if base is not None else None
        if scorer:
            return self._by_scorer.get(scorer, {}).get(measure)
        return next((ms[measure] for ms in self._by_scorer.values() if measure in ms), None)

    def measure(self, outcome: str) -> Measure:
        """:meth:`declared`, or a generic continuous declaration named after the outcome."""
        found = self.declared(outcome)
        if found is not None:
            return found
        scorer, _, measure = str(outcome).rpartition(".")
        if measure.endswith(ANY_LEVEL) and len(measure) > len(ANY_LEVEL):
            return any_level(self.measure(str(outcome)[:-len(ANY_LEVEL)]))
        return _generic(measure, scorer or None)

    def label(self, outcome: str) -> str:
        return self.measure(outcome).label

    def is_binary(self, outcome: str) -> bool:
        return self.measure(outcome).kind == "binary"

    def scale_unit(self, outcome: str) -> tuple[float, str]:
        """How an absolute gap is shown: (factor, unit)."""
        return self.measure(outcome).absolute_scale

    def is_absolute(self, outcome: str, ref_mean: float | None = None) -> bool:
        """Whether a gap is stated absolutely: declared so, or the control mean is 0 or missing."""
        if self.measure(outcome).gap_unit != "relative":
            return True
        try:
            ref = float(ref_mean) if ref_mean is not None else math.nan
        except (TypeError, ValueError):
            ref = math.nan
        return not math.isfinite(ref) or abs(ref) < 1e-9

    def sort_key(self, outcome: str) -> tuple[int, bool, str]:
        """Order of outcomes in a report: declared measures in scorer order, a derived outcome after
        its base, undeclared measures last, then by name."""
        measure = str(outcome).rpartition(".")[2]
        base = measure[:-len(ANY_LEVEL)] if measure.endswith(ANY_LEVEL) else measure
        rank = self._order.index(base) if base in self._order else len(self._order)
        return (rank, measure != base, str(outcome))


@lru_cache(maxsize=1)
def builtin_catalog() -> MeasureCatalog:
    """The catalog of the built-in scorers alone (for tables that carry no scorer info)."""
    return MeasureCatalog.from_scorer_info({})


__all__ = ["ANY_LEVEL", "GAP_UNITS", "KINDS", "TEXT_KINDS", "Evidence", "Measure", "MeasureCatalog", "any_level", "builtin_catalog",
           "measure_dicts", "names"]
