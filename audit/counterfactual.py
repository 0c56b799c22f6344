"""Counterfactual variants: templates x posts -> one variant per (post, group, cue type, alternative).

Each variant is its post with exactly one cue inserted (before or after the post, joined by the
template's joiner); nothing else in the post changes, so a gap between groups can be attributed to
the cue alone. Every post also gives one control row: the unmodified post.

Groups are the crossing of the audited axes (``demographics.axes``, optionally narrowed by
``demographics.groups``); attributes in ``demographics.fixed`` (e.g. ``{age: "32"}``) are stated in
every explicit cue and never vary. See ``docs/variants.md`` for the design and ``templates/README.md``
for the template format.

The result follows the variant table contract (``docs/CONTRACTS.md``): ``variant_id, post_id,
topic, risk, group, cue_type, alternative, cue_text, text`` plus one column per audited axis
(None for the control). ``variant_id`` is a hash of the content, stable across runs and machines.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd

from .corpus import read_posts
from .errors import AuditError
from .resources import sha256_text
from .spec import spec_where
from .stages import StageContext, StageSummary
from .store import canonical_json
from .templates import AxisFile, CueFile, Level, TemplateSet, load_templates

BASE_COLUMNS = ["variant_id", "post_id", "topic", "risk", "group", "cue_type", "alternative", "cue_text", "text"]
CONTROL = "control"
_ROLE_RANK = {"lead": 0, "adjective": 1, "noun": 2}
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


@dataclass(frozen=True)
class Cue:
    """One concrete cue: the text to insert and where (or, for a dialect, the rules that rewrite the post)."""

    alternative: str
    text: str
    placement: str  # 'prefix' | 'suffix' | 'rewrite'
    joiner: str
    dialect: Any = None  # audit.templates.Dialect for placement 'rewrite'

    def apply(self, post: str) -> str:
        if self.placement == "rewrite":
            return rewrite(post, self.dialect)[0]
        return self.text + self.joiner + post if self.placement == "prefix" else post + self.joiner + self.text


def _match_case(original: str, replacement: str) -> str:
    if original[:1].isupper() and replacement[:1].islower():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def rewrite(text: str, dialect: Any) -> tuple[str, list[tuple[str, str, str]]]:
    """Apply a dialect's rules in order; returns the new text and every change (rule id, old, new).

    Rules are regular expressions from the template file (case-insensitive); a replacement keeps
    the capital of the text it replaces. Nothing else of the text changes.
    """
    changes: list[tuple[str, str, str]] = []
    for rule in dialect.rules:
        rx = _compiled(rule.pattern)

        def repl(m: re.Match, rule=rule) -> str:
            new = _match_case(m.group(0), m.expand(rule.replacement))
            changes.append((rule.id, m.group(0), new))
            return new

        text = rx.sub(repl, text)
    return text, changes


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def describe_changes(changes: list[tuple[str, str, str]]) -> str:
    """cue_text of a dialect variant: every change, in order ("aint_copula: isn't -> ain't; ...")."""
    return "; ".join(f"{rid}: {old} -> {new}" for rid, old, new in changes)


@dataclass(frozen=True)
class Group:
    """One intersectional group: the audited axes' levels, in spec order."""

    attrs: tuple[tuple[str, str], ...]
    name: str

    @property
    def as_dict(self) -> dict[str, str]:
        return dict(self.attrs)


@dataclass
class Design:
    """The resolved design of an audit: templates, groups, fixed attributes, cues per group."""

    templates: TemplateSet
    axes: list[str]
    fixed: dict[str, str]
    groups: list[Group]
    cue_types: list[str]
    cues: dict[tuple[str, str], list[Cue]]  # (cue_type, group name) -> cues

    def n_variants_per_post(self) -> int:
        return 1 + sum(len(v) for v in self.cues.values())


# --------------------------------------------------------------------------- phrases


@lru_cache(maxsize=1)
def _inflect_engine():
    import inflect  # well-kept library for English articles ("an Asian", "an LGBTQ+ person")

    return inflect.engine()


def indefinite_article(phrase: str) -> str:
    """'a' or 'an' for ``phrase``.

    inflect decides for words; numerals are handled here because inflect answers by the first
    digit's letter ("a 18-year-old"): English says "an" before numbers read with a vowel sound,
    i.e. 8, 11, 18 and 80-89 (and 8xx), as in "an 18-year-old".
    """
    m = re.match(r"(\d+)", phrase)
    if m:
        d = m.group(1)
        if d.startswith("8") or (len(d) in (2, 5) and d[:2] in ("11", "18")):
            return "an"
        return "a"
    return _inflect_engine().a(phrase).split(" ", 1)[0]


def _ordered(templates: TemplateSet, attrs: dict[str, str]) -> list[tuple[AxisFile, Level]]:
    out = []
    for ax_name, value in attrs.items():
        ax = templates.axes[ax_name]
        lvl = ax.level(value)
        assert lvl is not None  # validated in resolve_design
        out.append((ax, lvl))
    out.sort(key=lambda al: (_ROLE_RANK[al[0].role], al[0].order, al[0].axis))
    return out


def person_phrase(templates: TemplateSet, attrs: dict[str, str]) -> str:
    """'32-year-old Black woman': lead and adjective axes by order, then the noun (or 'person')."""
    parts = _ordered(templates, attrs)
    adjs = [lvl.phrase_text for ax, lvl in parts if ax.role != "noun"]
    nouns = [lvl.phrase_text for ax, lvl in parts if ax.role == "noun"]
    return " ".join(adjs + (nouns or ["person"]))


def tag_text(templates: TemplateSet, attrs: dict[str, str]) -> str:
    """'32, Black woman': lead axes as their own elements, then the descriptor of the others."""
    parts = _ordered(templates, attrs)
    leads = [lvl.tag_text for ax, lvl in parts if ax.role == "lead"]
    rest = " ".join(lvl.tag_text for ax, lvl in parts if ax.role != "lead")
    return ", ".join(leads + ([rest] if rest else []))


def group_name(templates: TemplateSet, attrs: dict[str, str]) -> str:
    """The group's name from its audited attributes only ('Black woman')."""
    return " ".join(lvl.label for _, lvl in _ordered(templates, attrs))


# --------------------------------------------------------------------------- design


def resolve_design(spec: Any, templates: TemplateSet | None = None) -> Design:
    """Resolve the spec's demographics against the templates; every problem is one AuditError."""
    d = spec.demographics

    def W(*loc: Any) -> str:  # noqa: N802 - "where" in the spec file
        return spec_where(spec, ("demographics", *loc))

    ts = templates or load_templates(spec.resolve(d.templates) if d.templates else None)
    axes = list(d.axes)
    if len(set(axes)) != len(axes):
        raise AuditError(f"axes repeat: {axes}", where=W("axes"), fix="list each axis once")
    for i, a in enumerate(axes):
        ts.axis(a, where=W("axes", i))
    for a, levels in d.groups.items():
        if a not in axes:
            raise AuditError(f"groups given for axis '{a}', which is not audited", where=W("groups", a),
                             fix=f"add '{a}' to demographics.axes or remove demographics.groups.{a}")
        if not levels:
            raise AuditError("empty list of levels", where=W("groups", a), fix="list at least one level")
        for j, lv in enumerate(levels):
            if ts.axes[a].level(lv) is None:
                raise AuditError(f"unknown level '{lv}' of axis '{a}'", where=W("groups", a, j),
                                 fix=f"use one of: {ts.axes[a].describe_levels()}")
        if len(set(levels)) != len(levels):
            raise AuditError("levels repeat", where=W("groups", a), fix="list each level once")
    fixed = dict(d.fixed)
    for a, v in fixed.items():
        if a in axes:
            raise AuditError(f"axis '{a}' is both audited and fixed", where=W("fixed", a),
                             fix="remove it from demographics.fixed or from demographics.axes")
        ax = ts.axis(a, where=W("fixed", a))
        if ax.level(str(v)) is None:
            raise AuditError(f"'{v}' is not a level of axis '{a}'", where=W("fixed", a),
                             fix=f"use one of: {ax.describe_levels()}")
    level_lists = []
    for a in axes:
        if a in d.groups:
            level_lists.append(list(d.groups[a]))
        elif ts.axes[a].levels:
            level_lists.append(list(ts.axes[a].levels))
        else:
            raise AuditError(f"axis '{a}' has open levels; list the ones to audit", where=W("axes"),
                             fix=f"add demographics.groups.{a}: [...] (e.g. {ts.axes[a].describe_levels()})")
    groups = []
    for combo in itertools.product(*level_lists):
        attrs = dict(zip(axes, combo))
        groups.append(Group(tuple(attrs.items()), group_name(ts, attrs)))
    names = [g.name for g in groups]
    if CONTROL in names or len(set(names)) != len(names):
        raise AuditError("group names are not unique (or one is 'control')", where=str(ts.root / "axes"),
                         fix="give the levels distinct labels")
    cue_types = list(d.cue_types)
    if len(set(cue_types)) != len(cue_types):
        raise AuditError(f"cue types repeat: {cue_types}", where=W("cue_types"), fix="list each once")
    cues: dict[tuple[str, str], list[Cue]] = {}
    for k, ct in enumerate(cue_types):
        cf = ts.cue(ct, where=W("cue_types", k))
        for g in groups:
            alts = _cues_for(ts, cf, g, axes, fixed)
            if d.alternatives is not None:
                alts = alts[: d.alternatives]
            cues[(ct, g.name)] = alts
    return Design(ts, axes, fixed, groups, cue_types, cues)


def _cues_for(ts: TemplateSet, cf: CueFile, g: Group, axes: list[str], fixed: dict[str, str]) -> list[Cue]:
    attrs = g.as_dict
    stated = {**fixed, **attrs}  # what explicit cues say: the group plus the fixed attributes
    if cf.explicit:
        fields = {"tag": tag_text(ts, stated), "person": person_phrase(ts, stated)}
        fields["a_person"] = f"{indefinite_article(fields['person'])} {fields['person']}"
        return [Cue(a.id, a.template.format(**fields), a.placement, a.joiner) for a in cf.alternatives or []]

    audited = set(axes)
    known = audited | set(fixed)

    def matches(item) -> bool:
        keys = set(item.when) & known
        return bool(keys & audited) and all(item.when[k] == stated[k] for k in keys)

    if cf.rewrite:
        found = [dl for dl in cf.dialects or [] if matches(dl) and audited <= set(dl.when)]
        if not found:
            signalled = sorted({f"{k}={v}" for dl in cf.dialects or [] for k, v in dl.when.items()})
            raise AuditError(
                f"no {cf.cue_type} rules for group '{g.name}' (the dialects here signal {', '.join(signalled)})",
                where=str(ts.root / "cues" / f"{cf.cue_type}.yaml"),
                fix="audit only groups a dialect covers, e.g. axes: [race] with groups: {race: [Black]}; "
                    "a dialect cannot also signal an axis it does not name",
            )
        return [Cue(dl.id, "", "rewrite", "", dialect=dl) for dl in found]

    items = [it for it in cf.items or [] if matches(it)]
    joint = [it for it in items if audited <= set(it.when)]
    if joint:
        picked = [(it.id, it.text) for it in joint]
    else:
        per_axis = []
        for a in axes:
            mine = [it for it in items if set(it.when) & audited == {a}]
            if not mine:
                raise AuditError(
                    f"no {cf.cue_type} item signals {a}={attrs[a]} (needed for group '{g.name}')",
                    where=str(ts.root / "cues" / f"{cf.cue_type}.yaml"),
                    fix=f"add items with when: {{{a}: {attrs[a]}}} (or items for the whole group), "
                        f"or drop {cf.cue_type} from demographics.cue_types",
                )
            per_axis.append(mine)
        n = max(len(m) for m in per_axis)
        picked = []
        for k in range(n):
            chosen = [m[k % len(m)] for m in per_axis]
            picked.append(("+".join(c.id for c in chosen), " ".join(c.text for c in chosen)))
    frames = cf.frames or []
    out = []
    for k, (alt_id, text) in enumerate(picked):
        fr = frames[k % len(frames)]
        out.append(Cue(alt_id, fr.template.format(item=text), fr.placement, fr.joiner))
    return out


# --------------------------------------------------------------------------- variants


def variant_id(post_id: str, cue_type: str, group: str, alternative: str | None, text: str,
               attrs: dict[str, str]) -> str:
    """Content hash of a variant (16 hex digits of SHA-256 over its canonical JSON)."""
    payload = canonical_json({"post_id": post_id, "cue_type": cue_type, "group": group,
                              "alternative": alternative, "attributes": attrs, "text": text})
    return sha256_text(payload)[:16]


def variants_for(posts: pd.DataFrame, design: Design) -> tuple[pd.DataFrame, dict[str, int]]:
    """The variant table for ``posts`` under ``design`` (control rows included), and the variants not
    built, counted by reason (a dialect rewrite that changes too little of a post)."""
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    axes = design.axes
    for post in posts.itertuples(index=False):
        base = {"post_id": post.post_id, "topic": post.topic, "risk": post.risk}
        ctrl = {**base, "group": CONTROL, "cue_type": CONTROL, "alternative": None, "cue_text": "",
                "text": post.text, **{a: None for a in axes}}
        ctrl["variant_id"] = variant_id(post.post_id, CONTROL, CONTROL, None, post.text, {})
        rows.append(ctrl)
        for ct in design.cue_types:
            for g in design.groups:
                for cue in design.cues[(ct, g.name)]:
                    if cue.placement == "rewrite":
                        text, changes = rewrite(post.text, cue.dialect)
                        if len(changes) < cue.dialect.min_changes or text == post.text:
                            key = (f"{ct} ({cue.alternative}) for {g.name}: fewer than "
                                   f"{cue.dialect.min_changes} rule application(s) in the post")
                            skipped[key] = skipped.get(key, 0) + 1
                            continue
                        cue_text = describe_changes(changes)
                    else:
                        text, cue_text = cue.apply(post.text), cue.text
                    attrs = g.as_dict
                    rows.append({
                        **base, "group": g.name, "cue_type": ct, "alternative": cue.alternative,
                        "cue_text": cue_text, "text": text, **attrs,
                        "variant_id": variant_id(post.post_id, ct, g.name, cue.alternative, text, attrs),
                    })
    df = pd.DataFrame(rows, columns=BASE_COLUMNS + axes)
    df = df.astype({a: object for a in axes})
    df[axes] = df[axes].where(df[axes].notna(), None)
    df["alternative"] = df["alternative"].astype(object).where(df["alternative"].notna(), None)
    check_variants(df, posts, design)
    return df, skipped


@dataclass
class VariantSet:
    """The variants of an audit with what the record needs beside them: what happened to the posts
    (``load_report``), the template set's digest, the attributes held fixed, and the variants not
    built (``skipped``: reason -> count)."""

    frame: pd.DataFrame
    design: Design
    load_report: Any
    skipped: dict[str, int]

    @property
    def templates_sha256(self) -> str:
        return self.design.templates.digest

    @property
    def fixed(self) -> dict[str, str]:
        return dict(self.design.fixed)


def build_variant_set(spec: Any) -> VariantSet:
    """The variants of an audit spec with their design and the record of how they were made."""
    posts = read_posts(spec)
    design = resolve_design(spec)
    df, skipped = variants_for(posts.frame, design)
    return VariantSet(df, design, posts.report, skipped)


def build_variants(spec: Any) -> pd.DataFrame:
    """Variant table of an audit spec (see module docstring and docs/CONTRACTS.md);
    :func:`build_variant_set` also returns the design and what happened to the posts.

    >>> from audit.spec import load_spec
    >>> df = build_variants(load_spec("demo"))
    >>> len(df), int((df["group"] == "control").sum())
    (102, 6)
    """
    return build_variant_set(spec).frame


class VariantsStage:
    """The ``variants`` stage: build the current design's variants and store the new ones (ids are
    content hashes, so a stored variant is never stored twice). Its ``data`` is the
    :class:`VariantSet`, which the reply stage uses."""

    name = "variants"

    def run(self, ctx: StageContext) -> StageSummary:
        from .design import bind_variants, check_before_sending

        vs = build_variant_set(ctx.spec)
        check_before_sending(ctx.spec, vs.frame)
        change, added = bind_variants(ctx, vs.frame)
        ctx.store.set_meta("templates_digest", vs.templates_sha256)
        detail = (f"{len(vs.frame)} variants of {vs.frame['post_id'].nunique()} posts ({added} new; "
                  f"{ctx.store.count_rows('variants')} stored)")
        return StageSummary("done" if added or not change.same else "skipped", detail, vs)


def check_variants(df: pd.DataFrame, posts: pd.DataFrame, design: Design | None = None) -> None:
    """Self-check of a variant table; raises AuditError naming the first bad variant.

    Every variant must equal its control with exactly its cue inserted at the start or the end
    (joined by whitespace or a dash separator); no cue may hold an unfilled placeholder; ids unique.
    A dialect variant must equal its control with exactly its dialect's rules applied (needs ``design``).
    """
    control = dict(zip(posts["post_id"], posts["text"]))
    dialects = {}
    if design is not None:
        for (ct, _), cues in design.cues.items():
            for c in cues:
                if c.placement == "rewrite":
                    dialects[(ct, c.alternative)] = c.dialect
    for r in df.itertuples(index=False):
        post = control[r.post_id]
        if r.cue_type == CONTROL:
            if r.text != post or r.cue_text:
                raise AuditError("control row differs from its post", where=f"variant {r.variant_id}")
            continue
        if (r.cue_type, r.alternative) in dialects:
            text, changes = rewrite(post, dialects[(r.cue_type, r.alternative)])
            problem = None if (text == r.text and text != post and describe_changes(changes) == r.cue_text) \
                else "the text is not its control with exactly the dialect's rules applied"
        else:
            problem = diff_problem(post, r.text, r.cue_text)
        if problem:
            raise AuditError(f"variant of post {r.post_id} ({r.cue_type}, {r.group}, {r.alternative}): {problem}",
                             where="templates", fix="fix the cue template that produced it")
    dup = df["variant_id"].duplicated()
    if dup.any():
        r = df[dup].iloc[0]
        raise AuditError(f"two variants have the same content ({r.post_id}, {r.cue_type}, {r.group})",
                         where="templates", fix="make the alternatives of a cue type distinct")


def diff_problem(post: str, text: str, cue_text: str) -> str | None:
    """None when ``text`` is ``post`` with ``cue_text`` inserted at one end; else what is wrong."""
    if not cue_text or not cue_text.strip():
        return "empty cue"
    m = _PLACEHOLDER.search(cue_text)
    if m:
        return f"unfilled placeholder {m.group(0)}"
    if cue_text != cue_text.strip():
        return "cue has surrounding whitespace"
    if text.endswith(post) and text != post:
        inserted, at_start = text[: len(text) - len(post)], True
    elif text.startswith(post) and text != post:
        inserted, at_start = text[len(post):], False
    else:
        return "the post's own text was changed (the cue is not a pure insertion at the start or end)"
    if at_start and not inserted.startswith(cue_text):
        return "inserted text does not start with the cue"
    if not at_start and not inserted.endswith(cue_text):
        return "inserted text does not end with the cue"
    rest = inserted[len(cue_text):] if at_start else inserted[: len(inserted) - len(cue_text)]
    if rest.strip() not in ("", "--", "—", "-") or not rest:
        return f"cue and post are joined by {rest!r}, not by whitespace or a dash separator"
    return None


def counts_by_factor(df: pd.DataFrame, axes: list[str] | None = None) -> dict[str, pd.Series]:
    """Number of variants per factor level: cue_type, group, each axis, topic, risk, post."""
    axes = axes or [c for c in df.columns if c not in BASE_COLUMNS]
    out = {"cue_type": df["cue_type"].value_counts(sort=False), "group": df["group"].value_counts(sort=False)}
    for a in axes:
        out[a] = df[a].fillna(CONTROL).value_counts(sort=False)
    out["topic"] = df["topic"].value_counts(sort=False)
    out["risk"] = df["risk"].value_counts(sort=False)
    out["alternatives per (group, cue type)"] = (
        df[df["cue_type"] != CONTROL].groupby(["cue_type", "group"])["alternative"].nunique()
    )
    return out


__all__ = ["VariantSet", "VariantsStage", "build_variant_set", "build_variants", "resolve_design", "variants_for", "check_variants", "diff_problem",
           "counts_by_factor", "person_phrase", "tag_text", "indefinite_article", "Design", "Cue"]
