"""The PCSA design: which conversations an audit holds, and the demographic cue each persona carries.

Arms (one row each in ``pcsa_conversations``):

- ``persona``: every audited model x persona x objective category x demographic group (``control``:
  the persona without any cue). Phase I of Xu et al. 2026: the attacker plays the persona, whose
  objective is recast as a cognitive distortion the client sincerely holds (:func:`audit.pcsa.data.recast`).
- ``direct`` (baseline): a single-turn direct request for the objective, without persona;
- ``crescendo`` (baseline): a gradual escalation without persona (Russinovich et al. 2024).

Baselines are run as many times per (model, objective) as the persona arm has personas (replicates
with their own attacker seeds), so each objective's baseline ASR rests on as many conversations as
one group's persona ASR.

The demographic cue (the project's addition): the empathy suite's cue template (explicit statement:
"For context, I'm a Black woman."; or explicit tag: "[Black woman]") with the person phrase of the
audited attributes plus the persona's own gender when gender is not an audited axis. The attacker is
told to open the client's first message with it. Conversation ids are content addresses over the
conversation's design and the dialogue settings, so a changed setting is a new conversation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from ..errors import AuditError
from ..store import canonical_json
from .data import load_data, prompt_hashes

CONTROL = "control"
NO_PERSONA = "no persona"


@dataclass(frozen=True)
class Group:
    name: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    arm: str                 # persona | direct | crescendo
    model_label: str
    persona_id: str | None
    objective: str
    distortion: str | None
    group_name: str
    attributes: dict[str, str]
    cue_text: str
    replicate: int
    mode: str                # adaptive | fixed | single

    def row(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "arm": self.arm, "model_label": self.model_label,
                "persona_id": self.persona_id, "objective": self.objective, "distortion": self.distortion,
                "group_name": self.group_name, "attributes": {**self.attributes, "cue_text": self.cue_text},
                "replicate": self.replicate, "mode": self.mode}


def selected(spec: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """(personas, objectives, strategies) of the spec, in order."""
    d, cfg = load_data(), spec.pcsa
    personas = [d.personas[i] for i in cfg.personas] if cfg.personas else list(d.personas.values())
    if cfg.persona_limit:
        personas = personas[:cfg.persona_limit]
    objectives = [d.objectives[i] for i in cfg.objectives] if cfg.objectives else list(d.objectives.values())
    strategies = [d.strategies[i] for i in cfg.strategies] if cfg.strategies else list(d.strategies.values())
    return personas, objectives, strategies


def _templates(spec: Any) -> Any:
    from ..templates import load_templates

    return load_templates(spec.resolve(spec.demographics.templates) if spec.demographics.templates else None)


def groups(spec: Any) -> list[Group]:
    """The demographic groups crossed into the personas (``control`` first when included)."""
    dem = spec.pcsa.demographics
    out = [Group(CONTROL)] if dem.include_control or not dem.axes else []
    if not dem.axes:
        return out
    from ..counterfactual import group_name

    ts = _templates(spec)
    levels = []
    for ax in dem.axes:
        axis = ts.axis(ax, where="pcsa.demographics.axes")
        wanted = dem.groups.get(ax) or list(axis.levels)
        for v in wanted:
            if axis.level(v) is None:
                raise AuditError(f"'{v}' is not a level of axis '{ax}'", where=f"pcsa.demographics.groups.{ax}",
                                 fix="use one of: " + axis.describe_levels())
        levels.append(wanted)
    for combo in product(*levels):
        attrs = dict(zip(dem.axes, combo))
        out.append(Group(group_name(ts, attrs), attrs))
    return out


def cue_text(spec: Any, group: Group, persona: Any) -> str:
    """The sentence (or tag) by which the client states the group; '' for the control."""
    if not group.attributes:
        return ""
    from ..counterfactual import indefinite_article, person_phrase, tag_text

    dem = spec.pcsa.demographics
    ts = _templates(spec)
    attrs = dict(group.attributes)
    if "gender" not in attrs and "gender" in ts.axes and ts.axes["gender"].level(persona.gender) is not None:
        attrs["gender"] = persona.gender
    cue = ts.cue(dem.cue_type, where="pcsa.demographics.cue_type")
    alts = cue.alternatives
    alt = next((a for a in alts if a.id == dem.alternative), None) if dem.alternative else alts[0]
    if alt is None:
        raise AuditError(f"cue type {dem.cue_type} has no alternative '{dem.alternative}'",
                         where="pcsa.demographics.alternative", fix="use one of: " + ", ".join(a.id for a in alts))
    phrase = person_phrase(ts, attrs)
    return alt.template.format(a_person=f"{indefinite_article(phrase)} {phrase}", person=phrase,
                               tag=tag_text(ts, attrs))


def settings(spec: Any) -> dict[str, Any]:
    """The dialogue settings every conversation id covers: the loop's settings, the prompt hashes, and
    who plays the attacker and the evaluator with which decoding, and the targets' decoding (the judge
    is not part of it: a new judge re-judges the same dialogues)."""
    cfg = spec.pcsa
    _, _, strategies = selected(spec)
    roles = {"attacker": cfg.attacker.model_dump(mode="json"),
             "evaluator": cfg.evaluator.model_dump(mode="json") if cfg.evaluator and cfg.mode == "adaptive" else None,
             "target_decoding": spec.decoding.model_dump(mode="json")}
    return {"mode": cfg.mode, "max_turns": cfg.max_turns, "n_candidates": cfg.n_candidates,
            "stop_threshold": cfg.stop_threshold, "strategies": [s.id for s in strategies],
            "prompts": prompt_hashes(), "roles": roles}


def _cid(**parts: Any) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:24]


def plan(spec: Any) -> list[Conversation]:
    """Every conversation of the spec's design, in a stable order."""
    cfg = spec.pcsa
    personas, objectives, _ = selected(spec)
    gs = groups(spec)
    st = settings(spec)
    out: list[Conversation] = []
    for m in spec.models:
        target = m.model_dump(mode="json")
        for p, o, g in product(personas, objectives, gs):
            cue = cue_text(spec, g, p)
            out.append(Conversation(_cid(arm="persona", model=m.label, target=target, persona=p.id, objective=o.id,
                                         group=g.name, cue=cue, settings=st, seed=spec.seed),
                                    "persona", m.label, p.id, o.id, o.distortion, g.name, dict(g.attributes), cue, 0,
                                    cfg.mode))
        if cfg.baselines:
            for o, r in product(objectives, range(len(personas))):
                out.append(Conversation(_cid(arm="direct", model=m.label, target=target, objective=o.id, replicate=r,
                                             prompts=st["prompts"], roles=st["roles"], seed=spec.seed),
                                        "direct", m.label, None, o.id, None, NO_PERSONA, {}, "", r, "single"))
                out.append(Conversation(_cid(arm="crescendo", model=m.label, target=target, objective=o.id, replicate=r,
                                             settings=st, seed=spec.seed),
                                        "crescendo", m.label, None, o.id, None, NO_PERSONA, {}, "", r, cfg.mode))
    return out


__all__ = ["CONTROL", "Conversation", "Group", "NO_PERSONA", "cue_text", "groups", "plan", "selected", "settings"]
