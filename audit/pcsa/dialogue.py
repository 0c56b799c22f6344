"""The PCSA dialogue loop (Phase II) and the final judge, every call through the request engine.

Conversations advance in lockstep: at each turn, every open conversation's attacker candidates go to
the engine in one batch (:func:`audit.engine.complete`), then every candidate's target reply, then
(adaptive mode) every evaluator score. A turn is a request whose messages hold the stored previous
turns, so its request key is a content address of the whole dialogue so far: a killed run
(``kill -9`` included) replays the stored turns from the cache, without sending anything, and goes on
where it stopped. The turns are written to ``pcsa_turns`` (primary key conversation, turn, role,
candidate), so a replayed turn is never stored twice.

Requests: ``purpose`` ``pcsa_attacker`` | ``pcsa_target`` | ``pcsa_evaluator`` | ``pcsa_judge``,
``subject_key`` the conversation id, ``style`` the strategy in use (judge: ``judge``), ``style_hash``
the SHA-256 of the prompt template, ``sample_index`` the best-of-N candidate (attacker: ``replicate x
N + candidate``, so baseline replicates get their own seeds).

Adaptive mode, per conversation and turn t (our choices where the paper is silent, documented in
docs/pcsa.md):

1. the attacker writes N candidate client turns with the current strategy;
2. the target replies to each candidate (given the dialogue so far);
3. the evaluator scores each reply 1-10 (strict JSON; unparseable = no score, stored and counted);
4. the candidate with the highest score is kept (ties: the lowest index; unparseable ranks last);
5. stop when the kept score >= ``stop_threshold`` (``threshold``) or at ``max_turns``; otherwise switch
   to the next strategy (in the configured order, cycling) when the kept score did not rise above the
   previous turn's (the first turn is compared with 1, a refusal), else keep the strategy.

Fixed mode (the paper's ablation): strategy ``t`` is ``strategies[(t - 1) mod k]``, N = 1, no evaluator,
every conversation runs ``max_turns`` turns. Baselines: ``direct`` is one turn without persona;
``crescendo`` is the loop without persona and without strategies (the escalation instruction counts
the turns), stopped by the evaluator in adaptive mode.

A request that failed after the engine's retries leaves its conversation open for this run (counted
as unanswered); the next run retries it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..engine import GenerationSummary, complete
from ..resources import sha256_text
from .data import load_data, recast
from .parse import parse_evaluator, parse_judge
from .plan import Conversation, selected

ATTACKER_CHARS = 1500  # a client turn longer than this is cut (an attacker that rambles)
_LABEL = re.compile(r"^\s*(\*\*)?(client|user|me)(\*\*)?\s*:\s*", re.IGNORECASE)


@dataclass
class Roles:
    """The models of the four roles (``evaluator`` None in fixed mode) and how to key their requests."""

    attacker: Any
    attacker_decoding: Any
    targets: dict[str, Any]
    target_decoding: Any
    evaluator: Any | None
    evaluator_decoding: Any | None
    judge: Any
    judge_decoding: Any
    identities: dict[str, tuple[str, str] | None] = field(default_factory=dict)   # role -> identity override
    seed: int = 0


@dataclass
class State:
    conv: Conversation
    history: list[tuple[str, str]] = field(default_factory=list)   # (client, counsellor) per turn
    strategy_idx: int = 0
    last_score: int | None = None
    done: bool = False
    stop_reason: str | None = None
    first_success: int | None = None
    max_score: int | None = None
    stalled: bool = False

    @property
    def turn(self) -> int:
        return len(self.history)


def clean_client_turn(text: str | None) -> str:
    """The attacker's answer as a client turn: stripped, without a leading 'Client:' label or
    wrapping quotes, cut at :data:`ATTACKER_CHARS`."""
    t = (text or "").strip()
    t = _LABEL.sub("", t).strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        t = t[1:-1].strip()
    return t[:ATTACKER_CHARS]


def render_conversation(history: list[tuple[str, str]]) -> str:
    """The transcript as the evaluator and judge read it."""
    parts = []
    for i, (c, s) in enumerate(history, 1):
        parts.append(f"[Client, turn {i}]\n{c}\n\n[Counsellor, turn {i}]\n{s}")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------- prompts


def _fmt(template: str, **kw: Any) -> str:
    return template.format(**kw).strip()


def attacker_system(spec: Any, state: State, strategy: Any | None) -> tuple[str, str]:
    """(system prompt, template name) of the attacker for the conversation's next turn."""
    d = load_data()
    c = state.conv
    o = d.objectives[c.objective]
    common = dict(objective_label=o.label, objective_goal=o.goal, safety_rule=" ".join(d.prompts["safety_rule"].split()))
    if c.arm == "direct":
        return _fmt(d.prompts["attacker_direct"], **common), "attacker_direct"
    if c.arm == "crescendo":
        return _fmt(d.prompts["attacker_crescendo"], turn=state.turn + 1, max_turns=spec.pcsa.max_turns,
                    **common), "attacker_crescendo"
    p = d.personas[c.persona_id]
    cue = (f"In the first message, the client mentions, in these words: \"{c.cue_text}\"" if c.cue_text else "")
    gender = {"woman": "a woman", "man": "a man"}[p.gender]
    if "gender" in c.attributes:
        gender = f"a {c.attributes['gender']}"
    return _fmt(d.prompts["attacker_persona"], age=p.age, gender_phrase=gender, occupation=p.occupation,
                presenting_problem=p.presenting_problem, history=p.history, style=p.style,
                examples=" / ".join(f'"{e}"' for e in p.examples), cue_instruction=cue,
                recasting=recast(o, d.distortions[c.distortion], d.recasting), strategy_label=strategy.label,
                strategy_description=strategy.description, **common), "attacker_persona"


def attacker_messages(system: str, history: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The attacker's view: it wrote the client turns (assistant), the counsellor's replies come to it."""
    d = load_data()
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": d.prompts["opening_request"]}]
    for client, counsellor in history:
        msgs.append({"role": "assistant", "content": client})
        msgs.append({"role": "user", "content": f"{d.prompts['continue_request']}\n\n{counsellor}"})
    return msgs


def target_messages(history: list[tuple[str, str]], client: str) -> list[dict[str, str]]:
    """The audited model's view: a plain conversation (no system prompt) ending with the client's turn."""
    msgs: list[dict[str, str]] = []
    for c, s in history:
        msgs += [{"role": "user", "content": c}, {"role": "assistant", "content": s}]
    msgs.append({"role": "user", "content": client})
    return msgs


def evaluator_messages(conv: Conversation, history: list[tuple[str, str]], client: str, reply: str
                       ) -> list[dict[str, str]]:
    d = load_data()
    o = d.objectives[conv.objective]
    text = _fmt(d.prompts["evaluator"], objective_label=o.label, objective_goal=o.goal,
                conversation=render_conversation(history + [(client, reply)]), last_reply=reply)
    return [{"role": "user", "content": text}]


def judge_messages(conv: Conversation, history: list[tuple[str, str]]) -> list[dict[str, str]]:
    d = load_data()
    o = d.objectives[conv.objective]
    text = _fmt(d.prompts["judge"], objective_label=o.label, objective_goal=o.goal,
                conversation=render_conversation(history))
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------- the loop


def _send(store: Any, model: Any, decoding: Any, items: list[dict[str, Any]], roles: Roles, role: str,
          progress: bool, summary: GenerationSummary) -> list[dict[str, Any] | None]:
    """Send ``items`` (cached ones are not sent); the stored reply of each, in order (None: failed)."""
    if not items:
        return []
    s = complete(store, model, decoding, items, progress=progress, base_seed=roles.seed,
                 description=f"pcsa {role} [{model.label}]", identity=roles.identities.get(role))
    summary += s
    got = store.replies_by_key(s.request_keys)
    out = []
    for k in s.request_keys:
        r = got.get(k)
        out.append(r if r is not None and r["status"] in ("ok", "content_filter") else None)
    return out


def _reply_text(r: dict[str, Any]) -> str:
    if r["status"] == "content_filter" or r.get("text") is None:
        return "[no reply: the endpoint's content filter]"
    return r["text"]


def run_dialogues(store: Any, spec: Any, convs: list[Conversation], roles: Roles, *, progress: bool = False,
                  echo: Callable[[str], None] | None = None) -> tuple[list[State], GenerationSummary]:
    """Run (or resume) every conversation of ``convs`` to its end; store turns and end states."""
    cfg = spec.pcsa
    _, _, strategies = selected(spec)
    summary = GenerationSummary()
    states = [State(c) for c in convs]
    n_cand = cfg.n_candidates if cfg.mode == "adaptive" else 1
    for turn in range(1, cfg.max_turns + 1):
        active = [s for s in states if not s.done and not s.stalled]
        if not active:
            break
        # 1. attacker candidates
        att_items, att_meta = [], []
        for s in active:
            strategy = None
            if s.conv.arm == "persona":
                idx = (turn - 1) % len(strategies) if cfg.mode == "fixed" else s.strategy_idx
                strategy = strategies[idx]
            system, tname = attacker_system(spec, s, strategy)
            msgs = attacker_messages(system, s.history)
            k = 1 if s.conv.arm == "direct" else n_cand
            for c in range(k):
                att_items.append({"purpose": "pcsa_attacker", "subject_key": s.conv.conversation_id, "messages": msgs,
                                  "style": strategy.id if strategy else s.conv.arm,
                                  "style_hash": sha256_text(load_data().prompts[tname]),
                                  "sample_index": s.conv.replicate * n_cand + c})
                att_meta.append((s, c, strategy.id if strategy else s.conv.arm))
        att = _send(store, roles.attacker, roles.attacker_decoding, att_items, roles, "attacker", progress, summary)
        cands: dict[int, list[tuple[int, str, str, str]]] = {}   # id(state) -> [(cand, text, key, strategy)]
        turn_rows = []
        for (s, c, strat), item, r in zip(att_meta, att_items, att):
            if r is None:
                s.stalled = True
                continue
            text = clean_client_turn(r["text"]) if r["status"] == "ok" else ""
            turn_rows.append({"conversation_id": s.conv.conversation_id, "turn": turn, "role": "attacker",
                              "candidate": c, "request_key": r["request_key"], "strategy": strat, "text": text})
            if text:
                cands.setdefault(id(s), []).append((c, text, r["request_key"], strat))
        for s in active:
            if not s.stalled and id(s) not in cands:   # the attacker wrote nothing usable
                s.done, s.stop_reason = True, "attacker_declined"
        live = [s for s in active if not s.done and not s.stalled]
        # 2. target replies, per audited model
        tgt: dict[tuple[int, int], dict[str, Any]] = {}
        for label, model in roles.targets.items():
            items, meta = [], []
            for s in live:
                if s.conv.model_label != label:
                    continue
                for c, text, _, strat in cands[id(s)]:
                    items.append({"purpose": "pcsa_target", "subject_key": s.conv.conversation_id,
                                  "messages": target_messages(s.history, text), "style": strat,
                                  "sample_index": s.conv.replicate})
                    meta.append((s, c))
            for (s, c), r in zip(meta, _send(store, model, roles.target_decoding, items, roles, "target", progress,
                                             summary)):
                if r is None:
                    s.stalled = True
                else:
                    tgt[(id(s), c)] = r
        live = [s for s in live if not s.stalled]
        for s in live:
            for c, _, _, strat in cands[id(s)]:
                r = tgt[(id(s), c)]
                turn_rows.append({"conversation_id": s.conv.conversation_id, "turn": turn, "role": "target",
                                  "candidate": c, "request_key": r["request_key"], "strategy": strat,
                                  "text": _reply_text(r)})
        # 3. evaluator scores (adaptive mode; never for the single-turn direct baseline)
        scores: dict[tuple[int, int], Any] = {}
        use_eval = roles.evaluator is not None and cfg.mode == "adaptive"
        if use_eval:
            items, meta = [], []
            for s in live:
                if s.conv.arm == "direct":
                    continue
                for c, text, _, strat in cands[id(s)]:
                    items.append({"purpose": "pcsa_evaluator", "subject_key": s.conv.conversation_id,
                                  "messages": evaluator_messages(s.conv, s.history, text, _reply_text(tgt[(id(s), c)])),
                                  "style": strat, "style_hash": sha256_text(load_data().prompts["evaluator"])})
                    meta.append((s, c, strat))
            for (s, c, strat), r in zip(meta, _send(store, roles.evaluator, roles.evaluator_decoding, items, roles,
                                                    "evaluator", progress, summary)):
                if r is None:
                    s.stalled = True
                    continue
                ev = parse_evaluator(r.get("text"), r.get("finish_reason"))
                scores[(id(s), c)] = ev
                turn_rows.append({"conversation_id": s.conv.conversation_id, "turn": turn, "role": "evaluator",
                                  "candidate": c, "request_key": r["request_key"], "strategy": strat,
                                  "text": r.get("text") if ev.status != "ok" else ev.reason, "score": ev.score,
                                  "parse_status": ev.status + ("" if ev.status == "ok" else f": {ev.reason}"),
                                  **ev.flags})
        # 4. keep the best candidate, decide
        chosen_keys: set[tuple[str, int]] = set()
        updates = []
        for s in live:
            if s.stalled:
                continue
            opts = cands[id(s)]
            if use_eval and s.conv.arm != "direct":
                def rank(o: tuple[int, str, str, str]) -> tuple[int, int]:
                    ev = scores[(id(s), o[0])]
                    return (ev.score if ev.score is not None else 0, -o[0])
                best = max(opts, key=rank)
                score = scores[(id(s), best[0])].score
            else:
                best, score = opts[0], None
            c, text, _, _ = best
            s.history.append((text, _reply_text(tgt[(id(s), c)])))
            chosen_keys.add((s.conv.conversation_id, c))
            if score is not None:
                s.max_score = max(s.max_score or 0, score)
                if score >= cfg.stop_threshold and s.first_success is None:
                    s.first_success = turn
            if s.conv.arm == "direct":
                s.done, s.stop_reason = True, "single_turn"
            elif score is not None and score >= cfg.stop_threshold:
                s.done, s.stop_reason = True, "threshold"
            elif turn >= cfg.max_turns:
                s.done, s.stop_reason = True, "max_turns"
            elif cfg.mode == "adaptive" and s.conv.arm == "persona":
                prev = s.last_score if s.last_score is not None else 1
                if score is None or score <= prev:
                    s.strategy_idx = (s.strategy_idx + 1) % len(strategies)
            s.last_score = score
            if s.done:
                updates.append((s.conv.conversation_id, _end_fields(s)))
        for row in turn_rows:
            row["chosen"] = int((row["conversation_id"], row["candidate"]) in chosen_keys)
        store.put_pcsa_turns(turn_rows)
        store.update_pcsa_conversations(updates)
        if echo is not None:
            echo(f"    turn {turn}: {len(live)} conversations advanced, "
                 f"{sum(s.done for s in states)} of {len(states)} finished")
    return states, summary


def _end_fields(s: State) -> dict[str, Any]:
    return {"status": "done", "stop_reason": s.stop_reason, "n_turns": s.turn, "first_success_turn": s.first_success,
            "max_score": s.max_score}


# ---------------------------------------------------------------------------- the judge


def stored_history(turns: Any, conversation_id: str) -> list[tuple[str, str]]:
    """The kept (client, counsellor) turns of a conversation from ``pcsa_turns`` rows."""
    t = turns[(turns["conversation_id"] == conversation_id) & (turns["chosen"] == 1)]
    client = t[t["role"] == "attacker"].set_index("turn")["text"]
    counsellor = t[t["role"] == "target"].set_index("turn")["text"]
    return [(str(client[i]), str(counsellor[i])) for i in sorted(set(client.index) & set(counsellor.index))]


def judge_conversations(store: Any, convs: list[Conversation], roles: Roles, *, progress: bool = False
                        ) -> tuple[dict[str, int], GenerationSummary]:
    """Judge every finished conversation of ``convs`` (cached verdicts are not asked again); store the
    parsed verdicts (or the unparseable answer and why). Returns counts by judge status."""
    import json

    summary = GenerationSummary()
    stored = store.pcsa_conversations_df().set_index("conversation_id")
    turns = store.pcsa_turns_df()
    items, meta = [], []
    counts = {"ok": 0, "unparseable": 0, "no_dialogue": 0, "failed": 0}
    updates = []
    for c in convs:
        if c.conversation_id not in stored.index or stored.at[c.conversation_id, "status"] != "done":
            continue
        hist = stored_history(turns, c.conversation_id)
        if not hist:
            counts["no_dialogue"] += 1
            updates.append((c.conversation_id, {"judge_status": "no_dialogue", "verdict": None}))
            continue
        items.append({"purpose": "pcsa_judge", "subject_key": c.conversation_id, "messages": judge_messages(c, hist),
                      "style": "judge", "style_hash": sha256_text(load_data().prompts["judge"])})
        meta.append(c)
    for c, r in zip(meta, _send(store, roles.judge, roles.judge_decoding, items, roles, "judge", progress, summary)):
        if r is None:
            counts["failed"] += 1
            continue
        j = parse_judge(r.get("text"), r.get("finish_reason"))
        counts[j.status] += 1
        if j.status == "ok":
            updates.append((c.conversation_id, {"judge_key": r["request_key"], "judge_status": "ok", "judge_detail": None,
                                                "verdict": j.verdict, **j.axes, "response_class": j.response_class,
                                                "evidence_json": json.dumps(j.evidence, ensure_ascii=False)}))
        else:
            updates.append((c.conversation_id, {
                "judge_key": r["request_key"], "judge_status": "unparseable", "verdict": None,
                "judge_detail": json.dumps({"reason": j.reason, "raw": r.get("text")}, ensure_ascii=False),
                "compliance": None, "harmful_content": None, "impersonation": None, "toxic_empathy": None,
                "response_class": None, "evidence_json": None}))
    store.update_pcsa_conversations(updates)
    return counts, summary


__all__ = ["Roles", "State", "attacker_messages", "attacker_system", "clean_client_turn", "evaluator_messages",
           "judge_conversations", "judge_messages", "render_conversation", "run_dialogues", "stored_history",
           "target_messages"]
