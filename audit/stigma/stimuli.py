"""The stigma suite's stimuli: vignettes x questions -> prompts, and how a prompt is sent.

Data (never Python literals): ``audit/data/moore/`` (the published vignettes and questions of Moore et
al., FAccT 2025, MIT; see its PROVENANCE.md: the upstream file names are swapped, ours say what they
hold), ``audit/data/moore/items.yaml`` (question ids and the stigma coding), and
``audit/data/stigma/`` (the format instruction and one-shot example, the expert-therapist system
prompt written for this project, and our own vignette set).

- :func:`question_bank` -> the 14 :class:`Item` s (id, question, options, stigma direction).
- :func:`moore_vignettes` -> the 72 published vignettes; :func:`own_vignettes` -> our own set, whose
  person phrase comes from the empathy suite's axis templates (so age, religion, ... can be added).
- :func:`stimuli_frame` (a spec's ``stigma`` section) -> one row per prompt in the variant layout of
  the run store (``post_id`` = the vignette, ``alternative`` = the question id, attributes
  condition, race, gender, education, question, stimuli).
- :func:`stigma_prompt` -> the prompt "style" (system prompt + instruction + one-shot example) whose
  ``messages(text)`` the reply stage sends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import AuditError
from ..resources import DATA_DIR, sha256_text
from ..store import canonical_json

MOORE_DIR = DATA_DIR / "moore"
STIGMA_DIR = DATA_DIR / "stigma"
CONDITIONS = ("daily troubles", "depression", "alcohol dependence", "schizophrenia")
CONTROL_CONDITION = "daily troubles"
STIMULUS_AXES = ("race", "gender", "education")
CUE_TYPE = "vignette"


@dataclass(frozen=True)
class Item:
    """One question: ``id``, ``label``, the question text, its ``options`` (letters A.. in order),
    whether it counts toward ``stigma`` and its ``direction`` (likely | unwilling | None)."""

    id: str
    label: str
    question: str
    options: tuple[str, ...]
    stigma: bool
    direction: str | None

    def text(self, fmt: dict[str, Any]) -> str:
        """The question with its lettered options, as upstream prints it."""
        lines = "\n".join(fmt["option_line"].format(letter=chr(65 + i), text=o) for i, o in enumerate(self.options))
        return fmt["question"].format(question_only=self.question, options=lines)


def _read_yaml(path: Path) -> Any:
    from ..spec import read_yaml

    return read_yaml(path, "stigma data")[0]


@lru_cache(maxsize=1)
def question_bank() -> tuple[Item, ...]:
    """The 14 questions with their coding (``items.yaml`` checked against ``questions.jsonl``)."""
    rows = [json.loads(line) for line in (MOORE_DIR / "questions.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    by_text = {r["question_only"]: r for r in rows}
    spec = _read_yaml(MOORE_DIR / "items.yaml")
    items = []
    for k, it in enumerate(spec["items"]):
        row = by_text.get(it["question"])
        if row is None:
            raise AuditError(f"item '{it['id']}' names a question that questions.jsonl does not hold",
                             where=f"{MOORE_DIR / 'items.yaml'}, items[{k}]", fix="copy the question text exactly")
        direction = it.get("direction") if it["stigma"] else None
        items.append(Item(it["id"], it["label"], it["question"], tuple(row["options"]), bool(it["stigma"]), direction))
    if len(items) != len(rows):
        raise AuditError("items.yaml does not list every question of questions.jsonl",
                         where=str(MOORE_DIR / "items.yaml"), fix="list all 14 questions")
    return tuple(items)


def items_by_id() -> dict[str, Item]:
    return {it.id: it for it in question_bank()}


def stigma_item_ids() -> list[str]:
    """The six counted items, in questionnaire order."""
    return [it.id for it in question_bank() if it.stigma]


@lru_cache(maxsize=1)
def prompt_format() -> dict[str, Any]:
    return _read_yaml(STIGMA_DIR / "format.yaml")


def moore_vignettes() -> pd.DataFrame:
    """The 72 published vignettes: ``condition, race, gender, education, vignette``."""
    rows = [json.loads(line) for line in (MOORE_DIR / "vignettes.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return pd.DataFrame(rows)[["condition", "race", "gender", "education", "vignette"]]


def own_vignettes(axes: Sequence[str] = ("race", "gender"), groups: dict[str, list[str]] | None = None,
                  educations: Sequence[str] | None = None, templates: str | Path | None = None) -> pd.DataFrame:
    """Our own vignettes (``own_vignettes.yaml``): every condition x every combination of the audited
    ``axes`` (levels from ``groups``, else every level of the axis file; race defaults to White, Black,
    Hispanic as in the published design) x education. The person phrase ("a 45-year-old Muslim Black
    woman") is the empathy suite's (:func:`audit.counterfactual.person_phrase`), so any axis of the
    templates can be audited; the columns are ``condition, <axes>, education, vignette``."""
    from ..counterfactual import group_name, indefinite_article, person_phrase
    from ..templates import load_templates

    data = _read_yaml(STIGMA_DIR / "own_vignettes.yaml")
    ts = load_templates(templates)
    groups = dict(groups or {})
    levels: dict[str, list[str]] = {}
    for ax in axes:
        axis = ts.axis(ax, where="stigma.axes")
        wanted = groups.get(ax) or (["White", "Black", "Hispanic"] if ax == "race" else list(axis.levels))
        for v in wanted:
            if axis.level(v) is None:
                raise AuditError(f"'{v}' is not a level of axis '{ax}'", where=f"stigma.groups.{ax}",
                                 fix="use one of: " + axis.describe_levels())
        levels[ax] = list(wanted)
    edus = list(educations or data["education"])
    for e in edus:
        if e not in data["education"]:
            raise AuditError(f"unknown education level '{e}'", where="stigma.groups.education",
                             fix="use one of: " + ", ".join(data["education"]))
    rows = []
    for cond, story in data["conditions"].items():
        for combo in product(*(levels[a] for a in axes)):
            attrs = dict(zip(axes, combo))
            gender = attrs.get("gender", "default")
            pron = data["pronouns"].get(gender, data["pronouns"]["default"])
            phrase = person_phrase(ts, attrs)
            for e in edus:
                slots = {"name": data["names"].get(gender, data["names"]["default"]),
                         "a_person": f"{indefinite_article(phrase)} {phrase}", "education": data["education"][e], **pron}
                text = (data["opening"] + " " + story.strip()).format(**slots)
                rows.append({"condition": cond, **attrs, "education": e, "vignette": text,
                             "demographic": group_name(ts, attrs)})
    return pd.DataFrame(rows)


def vignette_id(stimuli: str, attrs: dict[str, Any]) -> str:
    """A readable, stable vignette id: ``moore:depression:White:man:8th grade`` (``post_id``)."""
    return ":".join([stimuli, attrs["condition"], *(str(attrs[k]) for k in sorted(attrs) if k != "condition")])


def stimuli_frame(cfg: Any, templates: str | Path | None = None) -> pd.DataFrame:
    """One row per prompt (vignette x question) of the spec's ``stigma`` section ``cfg``, in the run
    store's variant layout: ``variant_id, post_id, topic, risk, group, cue_type, alternative,
    cue_text, text`` plus the attribute columns ``stimuli, condition, race, gender, education,
    question`` (and any extra audited axis). Raises AuditError for an unknown condition, question or
    level, naming the spec key."""
    fmt = prompt_format()
    items = items_by_id()
    qids = list(cfg.questions or [it.id for it in question_bank()])
    for q in qids:
        if q not in items:
            raise AuditError(f"unknown stigma question '{q}'", where="stigma.questions",
                             fix="use ids among: " + ", ".join(items))
    conds = list(cfg.conditions or CONDITIONS)
    for c in conds:
        if c not in CONDITIONS:
            raise AuditError(f"unknown condition '{c}'", where="stigma.conditions", fix="use among: " + ", ".join(CONDITIONS))
    groups = dict(cfg.groups or {})
    if cfg.stimuli == "moore":
        vig = moore_vignettes()
        axes = list(STIMULUS_AXES)
        extra = set(groups) - set(STIMULUS_AXES)
        if extra or list(cfg.axes) != ["race", "gender"]:
            raise AuditError("the published vignettes vary race, gender and education only",
                             where="stigma.axes" if not extra else f"stigma.groups.{sorted(extra)[0]}",
                             fix="use stimuli: own to audit other axes")
        for ax, wanted in groups.items():
            known = sorted(vig[ax].unique())
            bad = [w for w in wanted if w not in known]
            if bad:
                raise AuditError(f"'{bad[0]}' is not a {ax} of the published vignettes", where=f"stigma.groups.{ax}",
                                 fix="use among: " + ", ".join(known))
            vig = vig[vig[ax].isin(wanted)]
    else:
        axes = [*cfg.axes, "education"]
        extra = sorted(set(groups) - set(axes))
        if extra:
            raise AuditError(f"'{extra[0]}' is not an audited axis", where=f"stigma.groups.{extra[0]}",
                             fix=f"add it to stigma.axes (now {list(cfg.axes)}) or remove it from stigma.groups")
        vig = own_vignettes(cfg.axes, {k: v for k, v in groups.items() if k != "education"},
                            groups.get("education"), templates)
    vig = vig[vig["condition"].isin(conds)]
    rows = []
    for v in vig.to_dict("records"):
        attrs = {a: v[a] for a in axes}
        pid = vignette_id(cfg.stimuli, {"condition": v["condition"], **attrs})
        demo = v.get("demographic") or " ".join(str(v[a]) for a in axes if a != "education")
        group = f"{demo}, {v['education']}"
        for q in qids:
            text = fmt["prompt"].format(vignette=v["vignette"], question=items[q].text(fmt))
            vid = hashlib.sha256(canonical_json({"stigma": cfg.stimuli, "post": pid, "question": q, "text": text})
                                 .encode()).hexdigest()[:16]
            rows.append({"variant_id": vid, "post_id": pid, "topic": v["condition"], "risk": None, "group": group,
                         "cue_type": CUE_TYPE, "alternative": q, "cue_text": "", "text": text,
                         "stimuli": cfg.stimuli, "condition": v["condition"], **attrs, "question": q})
    if not rows:
        raise AuditError("the stigma design holds no prompt", where="stigma",
                         fix="check stigma.conditions, stigma.questions and stigma.groups")
    frame = pd.DataFrame(rows)
    for ax, level in (cfg.reference or {}).items():
        known = sorted(frame[ax].astype(str).unique()) if ax in frame.columns else []
        if str(level) not in known:
            raise AuditError(f"reference '{level}' is not a {ax} level of this design" if known
                             else f"'{ax}' is not an axis of this design", where=f"stigma.reference.{ax}",
                             fix="use one of: " + ", ".join(known or [a for a in axes]))
    return frame


# ---------------------------------------------------------------------------- how a prompt is sent


@dataclass(frozen=True)
class StigmaPrompt:
    """The prompt "style" of the stigma suite, with the interface of :class:`audit.prompts.PromptStyle`
    that the reply stage uses (``name``, ``style_hash``, ``messages(text)``, ``system``, ``user``,
    ``description``, ``source``): a system message (the chosen system prompt, a newline, the format
    instruction), the one-shot example, then the prompt."""

    name: str
    system: str
    example: tuple[tuple[str, str], ...]
    description: str = ""
    source: str = ""
    user: str = "{post}"

    @property
    def style_hash(self) -> str:
        return sha256_text(canonical_json({"system": self.system, "example": [list(e) for e in self.example],
                                           "user": self.user}))

    def messages(self, post_text: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}]
        out += [{"role": r, "content": c} for r, c in self.example]
        out.append({"role": "user", "content": post_text})
        return out


def system_prompt_text(cfg: Any) -> str | None:
    """The system prompt chosen in ``cfg`` (``none``: None; ``expert``: ours; ``own``: the user's)."""
    if cfg.system_prompt == "none":
        return None
    if cfg.system_prompt == "expert":
        return " ".join(_read_yaml(STIGMA_DIR / "expert_therapist.yaml")["text"].split())
    return cfg.system_prompt_text


def stigma_prompt(cfg: Any) -> StigmaPrompt:
    fmt = prompt_format()
    sys_text = system_prompt_text(cfg)
    instruction = " ".join(fmt["instruction"].split())
    system = instruction if sys_text is None else sys_text + "\n" + instruction
    example = tuple((m["role"], m["content"]) for m in fmt["example"])
    return StigmaPrompt(name=f"stigma-{cfg.system_prompt}", system=system, example=example,
                        description=f"stigma questions, system prompt: {cfg.system_prompt}", source=fmt["source"])


__all__ = ["CONDITIONS", "CONTROL_CONDITION", "Item", "StigmaPrompt", "items_by_id", "moore_vignettes",
           "own_vignettes", "prompt_format", "question_bank", "stigma_item_ids", "stigma_prompt", "stimuli_frame",
           "system_prompt_text"]
