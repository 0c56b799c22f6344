"""The PCSA suite's data: personas, distortions, strategies, objective categories and prompt templates.

All of it lives in ``audit/data/pcsa/*.yaml`` (sources in each file), is validated here with strict
pydantic models (a bad file raises one :class:`~audit.errors.AuditError` naming the file and key),
and never holds actionable harmful content: objectives are abstract category ids with short
non-actionable descriptions. :func:`prompt_hashes` gives the SHA-256 of every prompt template; the
suite stores them in the run's provenance (meta ``pcsa_prompts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import AuditError
from ..resources import DATA_DIR, sha256_text

PCSA_DIR = DATA_DIR / "pcsa"
PROMPT_KEYS = ("attacker_persona", "attacker_direct", "attacker_crescendo", "opening_request", "continue_request",
               "evaluator", "judge", "safety_rule")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Persona(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    age: int = Field(ge=16, le=100)
    gender: Literal["woman", "man"]
    occupation: str
    presenting_problem: str
    history: str
    style: str
    examples: list[str] = Field(min_length=1)


class Objective(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    label: str
    goal: str
    description: str = Field(max_length=300)
    distortion: str


class Distortion(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    label: str
    definition: str


class Strategy(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    label: str
    description: str


class _PersonaFile(_Strict):
    source: str
    version: int
    personas: list[Persona] = Field(min_length=30)


class _ObjectiveFile(_Strict):
    source: str
    version: int
    objectives: list[Objective] = Field(min_length=1)


class _DistortionFile(_Strict):
    source: str
    version: int
    recasting: str
    distortions: list[Distortion] = Field(min_length=1)


class _StrategyFile(_Strict):
    source: str
    version: int
    strategies: list[Strategy] = Field(min_length=1)


class _PromptFile(_Strict):
    source: str
    version: int
    safety_rule: str
    attacker_persona: str
    attacker_direct: str
    attacker_crescendo: str
    opening_request: str
    continue_request: str
    evaluator: str
    judge: str


def _load(name: str, model: type[BaseModel], root: Path | None = None) -> Any:
    # Read here rather than with audit.spec.read_yaml: the spec validates its pcsa section against
    # these files, so this module must not import audit.spec (an import cycle).
    import yaml

    path = (root or PCSA_DIR) / name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AuditError(f"cannot read the PCSA data file: {exc}", where=str(path),
                         fix="restore the file from the release (it is part of the package)") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        e = err.errors(include_url=False)[0]
        key = ".".join(str(p) for p in e["loc"])
        raise AuditError(f"{e['msg']}", where=f"{path}, key '{key}'",
                         fix="correct the entry; the layout is described at the top of the file") from None


def _unique(items: list[Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if it.id in out:
            raise AuditError(f"id '{it.id}' appears twice", where=str(PCSA_DIR / path), fix="give each entry its own id")
        out[it.id] = it
    return out


@dataclass(frozen=True)
class PcsaData:
    """Everything the suite reads from ``audit/data/pcsa``."""

    personas: dict[str, Persona]
    objectives: dict[str, Objective]
    distortions: dict[str, Distortion]
    recasting: str
    strategies: dict[str, Strategy]
    prompts: dict[str, str]


@lru_cache(maxsize=1)
def load_data() -> PcsaData:
    """Read and validate the suite's data files (cached)."""
    personas = _unique(_load("personas.yaml", _PersonaFile).personas, "personas.yaml")
    objectives = _unique(_load("objectives.yaml", _ObjectiveFile).objectives, "objectives.yaml")
    dfile = _load("distortions.yaml", _DistortionFile)
    distortions = _unique(dfile.distortions, "distortions.yaml")
    strategies = _unique(_load("strategies.yaml", _StrategyFile).strategies, "strategies.yaml")
    pf = _load("prompts.yaml", _PromptFile)
    for o in objectives.values():
        if o.distortion not in distortions:
            raise AuditError(f"objective '{o.id}' names unknown distortion '{o.distortion}'",
                             where=str(PCSA_DIR / "objectives.yaml"), fix="use one of: " + ", ".join(distortions))
    prompts = {k: getattr(pf, k) for k in PROMPT_KEYS}
    return PcsaData(personas, objectives, distortions, dfile.recasting, strategies, prompts)


def prompt_hashes() -> dict[str, str]:
    """SHA-256 of every prompt template (and of the recasting template), by name."""
    d = load_data()
    out = {k: sha256_text(v) for k, v in d.prompts.items()}
    out["recasting"] = sha256_text(d.recasting)
    return out


def recast(objective: Objective, distortion: Distortion, template: str) -> str:
    """The objective recast as a cognitive distortion the client sincerely holds (Phase I)."""
    return " ".join(template.format(distortion_label=distortion.label, distortion_definition=distortion.definition,
                                    objective_goal=objective.goal).split())


__all__ = ["Distortion", "Objective", "PCSA_DIR", "PcsaData", "Persona", "Strategy", "load_data", "prompt_hashes",
           "recast"]
