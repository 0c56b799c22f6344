"""Counterfactual templates: demographic axes and cue types, loaded from YAML and validated.

A template directory holds ``axes/<axis>.yaml`` (the levels of one demographic axis and how they
read in a tag or a sentence) and ``cues/<cue_type>.yaml`` (the texts that put a group into a post).
The built-in set is ``templates/`` (see :func:`audit.resources.templates_dir`); a spec can point at
another directory with ``demographics.templates``. ``templates/README.md`` documents the format.

Every file is validated with pydantic (unknown keys are errors); a bad file raises one
:class:`~audit.errors.AuditError` naming the file, the line and the key. Placeholders are checked
when the file is loaded, so a typo in a template is found before any variant is built.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import AuditError
from .resources import sha256_text, templates_dir
from .spec import CUE_TYPES, CueType, read_yaml, validation_error

Placement = Literal["prefix", "suffix"]

# Placeholders each kind of template may use.
EXPLICIT_FIELDS = {"tag", "person", "a_person"}
FRAME_FIELDS = {"item"}
_NAME_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _placeholders(template: str) -> set[str]:
    """Field names used in a ``str.format`` template; raises ValueError on a malformed template."""
    names = set()
    for _, field, spec, conv in string.Formatter().parse(template):
        if field is None:
            continue
        if field == "" or not field.isidentifier():
            raise ValueError(f"placeholder {{{field}}} is not a name; use e.g. {{tag}}")
        if spec or conv:
            raise ValueError(f"placeholder {{{field}}} must not carry a format spec or conversion")
        names.add(field)
    return names


def _check_fields(template: str, allowed: set[str], required: set[str] | None = None) -> str:
    used = _placeholders(template)
    unknown = used - allowed
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted('{' + u + '}' for u in unknown)}; allowed: "
            f"{sorted('{' + a + '}' for a in allowed)}"
        )
    missing = (required or set()) - used
    if missing:
        raise ValueError(f"template must contain {sorted('{' + m + '}' for m in missing)}")
    return template


def _check_joiner(v: str) -> str:
    if v.strip() not in ("", "--", "—", "-"):
        raise ValueError("joiner must be whitespace, optionally around a dash separator such as ' -- '")
    if v == "":
        raise ValueError("joiner must not be empty (the cue would run into the post)")
    return v


# --------------------------------------------------------------------------- axes


class Level(_Strict):
    label: str = Field(..., min_length=1, description="How the level reads in a group name.")
    tag: str | None = Field(None, description="Text in an explicit tag (default: label).")
    phrase: str | None = Field(None, description="Text in a person phrase (default: label).")
    rationale: str = Field(..., min_length=3, description="Why this label (source or reasoning).")

    @property
    def tag_text(self) -> str:
        return self.tag or self.label

    @property
    def phrase_text(self) -> str:
        return self.phrase or self.label


class OpenLevels(_Strict):
    """Levels given by a pattern (e.g. any age in years) rather than a list."""

    pattern: str
    describe: str | None = Field(None, description="The allowed values in words, for error messages.")
    label: str = "{value}"
    tag: str = "{value}"
    phrase: str = "{value}"
    rationale: str = Field(..., min_length=3)

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @field_validator("label", "tag", "phrase")
    @classmethod
    def _value_field(cls, v: str) -> str:
        return _check_fields(v, {"value"}, {"value"})


class AxisFile(_Strict):
    axis: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    source: str = Field(..., min_length=3)
    role: Literal["lead", "adjective", "noun"] = Field(
        ..., description="lead: own element of the tag and first adjective; adjective; noun: head noun."
    )
    order: int = Field(50, description="Position among adjectives in a person phrase.")
    levels: dict[str, Level] = Field(default_factory=dict)
    open_levels: OpenLevels | None = None

    @model_validator(mode="after")
    def _has_levels(self) -> "AxisFile":
        if not self.levels and self.open_levels is None:
            raise ValueError("an axis needs levels (or open_levels with a pattern)")
        for name in self.levels:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.+/-]*", name):
                raise ValueError(f"level name {name!r} may hold letters, digits, spaces and _.+/-")
        return self

    def level(self, value: str) -> Level | None:
        if value in self.levels:
            return self.levels[value]
        if self.open_levels is not None and re.fullmatch(self.open_levels.pattern, value):
            o = self.open_levels
            return Level(
                label=o.label.format(value=value), tag=o.tag.format(value=value),
                phrase=o.phrase.format(value=value), rationale=o.rationale,
            )
        return None

    def describe_levels(self) -> str:
        parts = list(self.levels)
        if self.open_levels is not None:
            o = self.open_levels
            parts.append(o.describe or f"any value matching {o.pattern}")
        return ", ".join(parts)


# --------------------------------------------------------------------------- cues


class _Placed(_Strict):
    """A template placed before or after the post, joined to it by ``joiner``."""

    id: str = Field(..., pattern=_NAME_RE)
    template: str
    placement: Placement
    joiner: str = " "
    rationale: str = Field(..., min_length=3)

    @field_validator("joiner")
    @classmethod
    def _joiner(cls, v: str) -> str:
        return _check_joiner(v)


class ExplicitAlternative(_Placed):
    @field_validator("template")
    @classmethod
    def _fields(cls, v: str) -> str:
        return _check_fields(v, EXPLICIT_FIELDS)


class Frame(_Placed):
    template: str = "{item}"

    @field_validator("template")
    @classmethod
    def _fields(cls, v: str) -> str:
        return _check_fields(v, FRAME_FIELDS, FRAME_FIELDS)


class Item(_Strict):
    id: str = Field(..., pattern=_NAME_RE)
    text: str = Field(..., min_length=1)
    when: dict[str, str] = Field(..., min_length=1, description="Axis levels this item signals.")
    strength: float | None = Field(None, ge=0, le=1, description="Association strength (source-defined).")
    shares: dict[str, float] = Field(default_factory=dict)
    also_in: str | None = None
    source: str | None = None
    rationale: str | None = None

    @field_validator("text")
    @classmethod
    def _no_braces(cls, v: str) -> str:
        if "{" in v or "}" in v:
            raise ValueError("item text must not contain { or } (it is data, not a template)")
        if v != v.strip():
            raise ValueError("item text must not start or end with whitespace")
        return v


class RewriteRule(_Strict):
    """One rule-based rewrite: a regular expression and its replacement (``\\1`` etc. for groups)."""

    id: str = Field(..., pattern=_NAME_RE)
    feature: str = Field(..., min_length=3, description="The linguistic feature, in words.")
    pattern: str
    replacement: str
    source: str = Field(..., min_length=3)
    example: str | None = Field(None, description="An input the rule must change (checked on load).")

    @model_validator(mode="after")
    def _valid(self) -> "RewriteRule":
        try:
            rx = re.compile(self.pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"rule '{self.id}': pattern is not a valid regular expression: {exc}") from None
        refs = [int(g) for g in re.findall(r"\\(\d+)", self.replacement)]
        if refs and max(refs) > rx.groups:
            raise ValueError(f"rule '{self.id}': replacement refers to group {max(refs)}, pattern has {rx.groups}")
        if "{" in self.replacement or "}" in self.replacement:
            raise ValueError(f"rule '{self.id}': replacement must not contain {{ or }}")
        if self.example is not None and rx.subn(self.replacement, self.example)[1] == 0:
            raise ValueError(f"rule '{self.id}': its example {self.example!r} is not changed by the pattern")
        return self


class Dialect(_Strict):
    """A rule-based dialect: rewrites of the post's own words (cue type implicit_dialect)."""

    id: str = Field(..., pattern=_NAME_RE)
    name: str
    when: dict[str, str] = Field(..., min_length=1)
    source: str = Field(..., min_length=3)
    rules: list[RewriteRule] = Field(..., min_length=1)
    min_changes: int = Field(1, ge=1, description="A post with fewer rule applications gets no variant (counted).")

    @model_validator(mode="after")
    def _unique(self) -> "Dialect":
        ids = [r.id for r in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError(f"rule ids must be unique; repeated: {_repeated(ids)}")
        return self


class CueFile(_Strict):
    cue_type: CueType
    description: str = ""
    source: str = Field(..., min_length=3, description="Where the cues come from (required).")
    sensitive: bool = Field(False, description="Documented as sensitive; never on by default.")
    # explicit cue types
    alternatives: list[ExplicitAlternative] | None = None
    # implicit cue types
    frames: list[Frame] | None = None
    items: list[Item] | None = None
    # rewriting cue types (implicit_dialect)
    dialects: list[Dialect] | None = None

    @property
    def explicit(self) -> bool:
        return self.cue_type.startswith("explicit_")

    @property
    def rewrite(self) -> bool:
        return self.dialects is not None

    @model_validator(mode="after")
    def _shape(self) -> "CueFile":
        if self.cue_type == "implicit_dialect" or self.dialects is not None:
            if self.cue_type != "implicit_dialect":
                raise ValueError("only implicit_dialect rewrites the post ('dialects'); other cue types insert text")
            if not self.dialects:
                raise ValueError("implicit_dialect needs a non-empty 'dialects' list")
            if self.alternatives is not None or self.frames is not None or self.items is not None:
                raise ValueError("implicit_dialect gives 'dialects' (rewrite rules), not alternatives/frames/items")
            ids = [d.id for d in self.dialects]
            if len(set(ids)) != len(ids):
                raise ValueError(f"dialect ids must be unique; repeated: {_repeated(ids)}")
            return self
        if self.explicit:
            if not self.alternatives:
                raise ValueError(f"{self.cue_type} needs a non-empty 'alternatives' list")
            if self.frames is not None or self.items is not None:
                raise ValueError(f"{self.cue_type} is explicit: give 'alternatives', not frames/items")
            ids = [a.id for a in self.alternatives]
        else:
            if not self.frames or not self.items:
                raise ValueError(f"{self.cue_type} needs non-empty 'frames' and 'items' lists")
            if self.alternatives is not None:
                raise ValueError(f"{self.cue_type} is implicit: give 'frames' and 'items', not alternatives")
            ids = [i.id for i in self.items]
            fids = [f.id for f in self.frames]
            if len(set(fids)) != len(fids):
                raise ValueError(f"frame ids must be unique; repeated: {_repeated(fids)}")
            texts = [(tuple(sorted(i.when.items())), i.text) for i in self.items]
            if len(set(texts)) != len(texts):
                raise ValueError("two items for the same group have the same text")
        if len(set(ids)) != len(ids):
            raise ValueError(f"ids must be unique; repeated: {_repeated(ids)}")
        return self


def _repeated(xs: list[str]) -> list[str]:
    return sorted({x for x in xs if xs.count(x) > 1})


# --------------------------------------------------------------------------- the set


class TemplateSet:
    """All axes and cue types of one template directory."""

    def __init__(self, root: Path, axes: dict[str, AxisFile], cues: dict[str, CueFile], digest: str):
        self.root = root
        self.axes = axes
        self.cues = cues
        self.digest = digest  # sha256 over every file's name and text: identifies the template set

    def axis(self, name: str, where: str = "demographics.axes") -> AxisFile:
        if name not in self.axes:
            raise AuditError(
                f"unknown demographic axis '{name}'", where=where,
                fix=f"use one of {sorted(self.axes)} or add {self.root / 'axes' / (name + '.yaml')}",
            )
        return self.axes[name]

    def cue(self, cue_type: str, where: str = "demographics.cue_types") -> CueFile:
        if cue_type not in self.cues:
            raise AuditError(
                f"no templates for cue type '{cue_type}'", where=where,
                fix=f"add {self.root / 'cues' / (cue_type + '.yaml')} or remove it from the spec"
                f" (available here: {sorted(self.cues)})",
            )
        return self.cues[cue_type]


def _load_file(path: Path, model: type[BaseModel], kind: str) -> BaseModel:
    data, text = read_yaml(path, kind)
    if not isinstance(data, dict):
        raise AuditError(f"a {kind} file must be a YAML mapping", where=str(path),
                         fix="see templates/README.md for the format")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(path, text, err, what_file=f"{kind} format (templates/README.md)") from None


def load_templates(root: str | Path | None = None) -> TemplateSet:
    """Load and validate the template directory ``root`` (default: the built-in templates)."""
    base = Path(root) if root is not None else templates_dir()
    return _load_cached(str(base.resolve()))


@lru_cache(maxsize=8)
def _load_cached_impl(root: str, stamp: tuple) -> TemplateSet:
    base = Path(root)
    if not base.is_dir():
        raise AuditError("template directory not found", where=root,
                         fix="check demographics.templates in the spec (relative to the spec file)")
    axes: dict[str, AxisFile] = {}
    cues: dict[str, CueFile] = {}
    hashed: list[str] = []
    axis_files = sorted((base / "axes").glob("*.yaml")) if (base / "axes").is_dir() else []
    cue_files = sorted((base / "cues").glob("*.yaml")) if (base / "cues").is_dir() else []
    if not axis_files:
        raise AuditError("no axis files found", where=str(base / "axes"),
                         fix="a template directory needs axes/<axis>.yaml files (see templates/README.md)")
    for p in axis_files:
        a = _load_file(p, AxisFile, "axis template")
        if a.axis != p.stem:
            raise AuditError(f"file declares axis '{a.axis}' but is named {p.name}", where=str(p),
                             fix=f"rename the file to {a.axis}.yaml or fix the 'axis' key")
        axes[a.axis] = a
        hashed.append(f"axes/{p.name}\n{p.read_text(encoding='utf-8')}")
    for p in cue_files:
        c = _load_file(p, CueFile, "cue template")
        if c.cue_type != p.stem:
            raise AuditError(f"file declares cue_type '{c.cue_type}' but is named {p.name}", where=str(p),
                             fix=f"rename the file to {c.cue_type}.yaml or fix the 'cue_type' key")
        _check_items_against_axes(c, axes, p)
        cues[c.cue_type] = c
        hashed.append(f"cues/{p.name}\n{p.read_text(encoding='utf-8')}")
    return TemplateSet(base, axes, cues, sha256_text("\n\x00".join(hashed)))


def _load_cached(root: str) -> TemplateSet:
    base = Path(root)
    files = sorted(list(base.glob("axes/*.yaml")) + list(base.glob("cues/*.yaml"))) if base.is_dir() else []
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _load_cached_impl(root, stamp)


def _check_items_against_axes(c: CueFile, axes: dict[str, AxisFile], path: Path) -> None:
    """Every item's ``when`` must name known axes and levels (a typo would silently match nothing)."""
    entries = [("items", i) for i in c.items or []] + [("dialects", d) for d in c.dialects or []]
    for kind, item in entries:
        idx = (c.items if kind == "items" else c.dialects).index(item)
        for ax, lv in item.when.items():
            where = f"{path}, key '{kind}[{idx}].when.{ax}' ({kind[:-1]} '{item.id}')"
            if ax not in axes:
                raise AuditError(f"unknown axis '{ax}'", where=where, fix=f"use one of {sorted(axes)}")
            if axes[ax].level(lv) is None:
                raise AuditError(f"unknown level '{lv}' of axis '{ax}'", where=where,
                                 fix=f"use one of: {axes[ax].describe_levels()}")


__all__ = ["AxisFile", "CueFile", "Level", "TemplateSet", "load_templates", "CUE_TYPES"]
