"""The appropriateness suite's stimuli: crisis stimuli x contexts x demographic cues -> conversations.

Data (never Python literals): ``audit/data/moore/appropriateness_stimuli.jsonl`` (the 10 published
stimuli of Moore et al., FAccT 2025, MIT: condition, id, the client's messages, the judge's yes/no
criterion question and the answer that makes a reply appropriate), ``audit/data/appropriateness/``
(``contexts.yaml``: our fictional therapy-conversation prefixes; ``prompt.yaml``: the instruction, the
judge's question template, the truncation and upstream decoding).

- :func:`load_stimuli` -> the stimuli; :func:`our_prefixes` -> our prefixes;
  :func:`read_transcripts` -> the user's transcripts (validated, one clear error per problem).
- :func:`conversations_frame` (a spec) -> one row per conversation in the run store's variant layout:
  ``post_id`` = ``<stimulus>|<context id>``, ``group`` = the demographic group (``control``: no cue),
  ``text`` = the conversation (JSON list of messages, without the system message), attributes
  ``stimulus, condition, context, prefix`` and the audited axes. The demographic cue (the empathy
  suite's templates, :func:`audit.counterfactual.variants_for`) goes into the **first client message
  of the stimulus**; context messages are never changed.
- :func:`appropriateness_prompt` -> the prompt "style" whose ``messages(text)`` the reply stage sends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import AuditError
from ..resources import DATA_DIR, sha256_text
from ..store import canonical_json

STIMULI_FILE = DATA_DIR / "moore" / "appropriateness_stimuli.jsonl"
APPROPRIATENESS_DIR = DATA_DIR / "appropriateness"
CONDITIONS = ("suicidal ideation", "delusions", "hallucinations", "mania", "obsessive-compulsive behavior")
CONTROL = "control"
NO_CONTEXT = "none"
_ROLES = {"user": "user", "client": "user", "assistant": "assistant", "therapist": "assistant",
          "clinician": "assistant"}


def _read_yaml(path: Path) -> Any:
    from ..spec import read_yaml

    return read_yaml(path, "appropriateness data")[0]


@lru_cache(maxsize=1)
def prompt_settings() -> dict[str, Any]:
    """``prompt.yaml``: instruction, judge template, truncation, upstream decoding."""
    return _read_yaml(APPROPRIATENESS_DIR / "prompt.yaml")


@lru_cache(maxsize=1)
def load_stimuli() -> pd.DataFrame:
    """The 10 stimuli: ``id, condition, messages, criterion, appropriate_answer`` (yes | no)."""
    rows = [json.loads(line) for line in STIMULI_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.DataFrame(rows)[["id", "condition", "messages", "criterion", "appropriate_answer"]]


def stimuli_by_id() -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in load_stimuli().to_dict("records")}


@lru_cache(maxsize=1)
def our_prefixes() -> dict[str, list[dict[str, str]]]:
    """Our fictional prefixes: id -> messages (``contexts.yaml``)."""
    return {p["id"]: [dict(m) for m in p["messages"]] for p in _read_yaml(APPROPRIATENESS_DIR / "contexts.yaml")["prefixes"]}


def check_conversation(messages: Any, where: str) -> list[dict[str, str]]:
    """A transcript's messages, roles normalised (client -> user; therapist, clinician -> assistant);
    raises one AuditError unless they alternate, start with the client and end with the therapist."""
    fix = ("give messages as [{role: user, content: ...}, {role: assistant, content: ...}, ...], starting with the "
           "client and ending with the therapist, so the crisis stimulus follows as the client's next turn")
    if not isinstance(messages, list) or not messages:
        raise AuditError("'messages' is missing or not a non-empty list", where=where, fix=fix)
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise AuditError(f"message {k} is not an object with exactly 'role' and 'content'", where=where, fix=fix)
        role = _ROLES.get(str(m["role"]).strip().lower())
        if role is None:
            raise AuditError(f"message {k} has role {m['role']!r}", where=where,
                             fix="use user (or client) and assistant (or therapist, clinician)")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise AuditError(f"message {k} has no text", where=where, fix="give every message its text")
        want = "user" if k % 2 == 0 else "assistant"
        if role != want:
            raise AuditError(f"message {k} is from the {role}, expected the {want}", where=where, fix=fix)
        out.append({"role": role, "content": m["content"]})
    if out[-1]["role"] != "assistant":
        raise AuditError("the transcript ends with the client", where=where, fix=fix)
    return out


def read_transcripts(path: str | Path) -> dict[str, list[dict[str, str]]]:
    """The user's transcripts (JSONL, one ``{"id": ..., "messages": [...]}`` per line): id -> messages.
    Raises one AuditError naming the file and line of the first problem."""
    p = Path(path)
    if not p.is_file():
        raise AuditError(f"transcripts file not found: {p}", where="appropriateness.transcripts",
                         fix="give the path of a JSONL file, relative to the spec file")
    out: dict[str, list[dict[str, str]]] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}, line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditError(f"not JSON: {exc.msg}", where=where, fix="one JSON object per line") from None
        if not isinstance(rec, dict) or not str(rec.get("id") or "").strip():
            raise AuditError("the line has no 'id'", where=where, fix='give each transcript {"id": ..., "messages": [...]}')
        tid = str(rec["id"]).strip()
        if tid in out:
            raise AuditError(f"transcript id '{tid}' repeats", where=where, fix="give each transcript its own id")
        if "|" in tid:
            raise AuditError(f"transcript id '{tid}' contains '|'", where=where, fix="leave '|' out of ids")
        out[tid] = check_conversation(rec.get("messages"), f"{where}, key 'messages'")
    if not out:
        raise AuditError("the transcripts file holds no transcript", where=str(p), fix="add at least one line")
    return out


def contexts_for(cfg: Any, resolve: Any = Path) -> list[tuple[str, str, list[dict[str, str]]]]:
    """``(context, prefix id, messages)`` for every context of the spec section ``cfg``."""
    out: list[tuple[str, str, list[dict[str, str]]]] = []
    for ctx in cfg.contexts:
        if ctx == "none":
            out.append(("none", NO_CONTEXT, []))
        elif ctx == "ours":
            ours = our_prefixes()
            wanted = list(cfg.prefixes or ours)
            for k, pid in enumerate(wanted):
                if pid not in ours:
                    raise AuditError(f"unknown prefix '{pid}'", where=f"appropriateness.prefixes[{k}]",
                                     fix="use among: " + ", ".join(ours))
                out.append(("ours", pid, ours[pid]))
        else:
            for tid, msgs in read_transcripts(resolve(cfg.transcripts)).items():
                out.append(("transcripts", tid, msgs))
    return out


def selected_stimuli(cfg: Any) -> pd.DataFrame:
    st = load_stimuli()
    if cfg.conditions:
        for k, c in enumerate(cfg.conditions):
            if c not in CONDITIONS:
                raise AuditError(f"unknown condition '{c}'", where=f"appropriateness.conditions[{k}]",
                                 fix="use among: " + ", ".join(CONDITIONS))
        st = st[st["condition"].isin(cfg.conditions)]
    if cfg.stimuli:
        known = set(load_stimuli()["id"])
        for k, s in enumerate(cfg.stimuli):
            if s not in known:
                raise AuditError(f"unknown stimulus '{s}'", where=f"appropriateness.stimuli[{k}]",
                                 fix="use among: " + ", ".join(load_stimuli()["id"]))
        st = st[st["id"].isin(cfg.stimuli)]
    if st.empty:
        raise AuditError("no stimulus is left", where="appropriateness",
                         fix="check appropriateness.stimuli and appropriateness.conditions")
    return st


def conversations_frame(spec: Any) -> pd.DataFrame:
    """One row per conversation of the spec (see the module docstring)."""
    from ..counterfactual import CONTROL as CF_CONTROL, resolve_design, variants_for

    cfg = spec.appropriateness
    st = selected_stimuli(cfg)
    contexts = contexts_for(cfg, spec.resolve)
    # the cue goes into the stimulus's first client message: cue it once per stimulus, reuse per context
    posts = pd.DataFrame({"post_id": st["id"], "topic": st["condition"], "risk": None,
                          "text": [m[0]["content"] for m in st["messages"]]})
    if cfg.cues:
        design = resolve_design(spec)
        cued, _ = variants_for(posts, design)
        axes = list(design.axes)
    else:
        cued = posts.assign(group=CF_CONTROL, cue_type=CF_CONTROL, alternative=None, cue_text="")
        axes = []
    by_id = stimuli_by_id()
    rows = []
    for v in cued.to_dict("records"):
        s = by_id[v["post_id"]]
        stim_msgs = [dict(m) for m in s["messages"]]
        stim_msgs[0]["content"] = v["text"]
        for context, prefix, msgs in contexts:
            conv = [*msgs, *stim_msgs]
            text = canonical_json(conv)
            attrs = {a: v.get(a) for a in axes}
            vid = sha256_text(canonical_json({"appropriateness": s["id"], "context": context, "prefix": prefix,
                                              "group": v["group"], "cue_type": v["cue_type"],
                                              "alternative": v["alternative"], "text": text}))[:16]
            rows.append({"variant_id": vid, "post_id": f"{s['id']}|{prefix}", "topic": s["condition"], "risk": None,
                         "group": v["group"], "cue_type": v["cue_type"], "alternative": v["alternative"],
                         "cue_text": v["cue_text"] or "", "text": text, "stimulus": s["id"], "condition": s["condition"],
                         "context": context, "prefix": prefix, **attrs})
    return pd.DataFrame(rows)


def final_client_message(text: str) -> str:
    """The last client message of a stored conversation (the judge's "Query")."""
    msgs = json.loads(text)
    return next(m["content"] for m in reversed(msgs) if m["role"] == "user")


# ---------------------------------------------------------------------------- how a conversation is sent


@dataclass(frozen=True)
class ConversationPrompt:
    """The prompt "style" of the suite, with the interface of :class:`audit.prompts.PromptStyle` that the
    reply stage uses: the system message (system prompt, newline, the character-limit instruction),
    then the stored conversation."""

    name: str
    system: str
    description: str = ""
    source: str = ""
    user: str = "{conversation}"

    @property
    def style_hash(self) -> str:
        return sha256_text(canonical_json({"system": self.system, "user": self.user}))

    def messages(self, text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, *json.loads(text)]


def appropriateness_prompt(cfg: Any) -> ConversationPrompt:
    from ..stigma.stimuli import system_prompt_text

    fmt = prompt_settings()
    sys_text = system_prompt_text(cfg)
    instruction = " ".join(fmt["instruction"].split())
    system = instruction if sys_text is None else sys_text + "\n" + instruction
    return ConversationPrompt(name=f"appropriateness-{cfg.system_prompt}", system=system,
                              description=f"crisis stimuli, system prompt: {cfg.system_prompt}", source=fmt["source"])


__all__ = ["CONDITIONS", "CONTROL", "ConversationPrompt", "appropriateness_prompt", "check_conversation",
           "contexts_for", "conversations_frame", "final_client_message", "load_stimuli", "our_prefixes",
           "prompt_settings", "read_transcripts", "selected_stimuli", "stimuli_by_id"]
