"""Prompt styles: the system/user wording in which a support post is presented to the model.

Styles are data, one YAML file each in ``templates/styles/`` (``name``, ``description``, ``source``,
``system`` (or null) and ``user``; ``{post}`` marks where the post goes and is the only placeholder,
so braces in a post or elsewhere in the wording are kept as they are). Shipped: ``plain``,
``peer_supporter``, ``forum_post``, ``clinician``, ``with_demographics``, ``without_demographics``.

A spec names styles in ``styles:``; a name is looked up in ``<demographics.templates>/styles/`` first
(when the spec points at its own template directory), then in the built-in styles. A name may also
be a path to a style file.

Every reply records the style's name and its **style hash**: SHA-256 over the canonical JSON of its
``system`` and ``user`` wording (not the description), so a report can show that two runs used the
same words, and a reworded style never shares cached replies with the old wording.

>>> messages, h = build_messages("plain", "I can't sleep and I feel alone.")
>>> messages
[{'role': 'user', 'content': "I can't sleep and I feel alone."}]
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import AuditError
from .resources import sha256_text, templates_dir
from .spec import read_yaml, validation_error
from .store import canonical_json

PLACEHOLDER = "{post}"


class PromptStyle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    source: str = ""
    system: str | None = None
    user: str = PLACEHOLDER

    @model_validator(mode="after")
    def _one_placeholder(self) -> "PromptStyle":
        n = self.user.count(PLACEHOLDER) + (self.system or "").count(PLACEHOLDER)
        if n != 1:
            raise ValueError(f"the wording must contain {PLACEHOLDER} exactly once (found {n} times)")
        return self

    @property
    def style_hash(self) -> str:
        return sha256_text(canonical_json({"system": self.system, "user": self.user}))

    def messages(self, post_text: str) -> list[dict[str, str]]:
        out = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system.replace(PLACEHOLDER, post_text)})
        out.append({"role": "user", "content": self.user.replace(PLACEHOLDER, post_text)})
        return out


def builtin_styles_dir() -> Path:
    return templates_dir() / "styles"


def _search_dirs(templates: str | Path | None) -> list[Path]:
    dirs = []
    if templates is not None:
        dirs.append(Path(templates) / "styles")
    dirs.append(builtin_styles_dir())
    return dirs


def available_styles(templates: str | Path | None = None) -> list[str]:
    names: set[str] = set()
    for d in _search_dirs(templates):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


@lru_cache(maxsize=256)
def _load_file(path: Path, mtime_ns: int, size: int) -> PromptStyle:
    data, text = read_yaml(path, "prompt style")
    if not isinstance(data, dict):
        raise AuditError("a prompt style must be a YAML mapping (name, system, user)", where=str(path),
                         fix="see templates/styles/plain.yaml")
    try:
        style = PromptStyle.model_validate(data)
    except ValidationError as err:
        raise validation_error(path, text, err, "prompt style") from None
    if path.suffix in (".yaml", ".yml") and style.name != path.stem and path.parent.name == "styles":
        raise AuditError(f"the style's name '{style.name}' differs from its file name", where=str(path),
                         fix=f"set name: {path.stem}, or rename the file")
    return style


def load_style(name: str, templates: str | Path | None = None) -> PromptStyle:
    """The prompt style ``name`` (or a path to a style file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        st = p.stat()
        return _load_file(p.resolve(), st.st_mtime_ns, st.st_size)
    for d in _search_dirs(templates):
        f = d / f"{name}.yaml"
        if f.is_file():
            st = f.stat()
            return _load_file(f.resolve(), st.st_mtime_ns, st.st_size)
    raise AuditError(
        f"unknown prompt style '{name}'", where="styles",
        fix=f"use one of: {', '.join(available_styles(templates))} (or add templates/styles/{name}.yaml)",
    )


def build_messages(style_name: str, post_text: str, templates: str | Path | None = None
                   ) -> tuple[list[dict[str, str]], str]:
    """(chat messages, style hash) for ``post_text`` presented in style ``style_name``."""
    style = load_style(style_name, templates)
    return style.messages(post_text), style.style_hash


def styles_for_spec(spec: Any) -> dict[str, PromptStyle]:
    """Every style the spec names, loaded and checked before anything is sent."""
    templates = spec.resolve(spec.demographics.templates) if spec.demographics.templates else None
    return {name: load_style(name, templates) for name in spec.styles}


def describe_styles(styles: Iterable[PromptStyle]) -> dict[str, dict[str, Any]]:
    """The record of the styles used, for the run's metadata."""
    return {s.name: {"hash": s.style_hash, "system": s.system, "user": s.user, "description": s.description,
                     "source": s.source} for s in styles}
