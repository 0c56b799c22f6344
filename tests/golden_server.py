"""A deterministic OpenAI-compatible server for the golden-run test: replies that a scorer can tell
apart, chosen by a hash of the prompt and seed, with a planted gap.

It is a test double (the stub server with a reply function), used to check that a refactoring
changes no number of a whole run: the same prompts always get the same replies, on any machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from audit.testing import StubServer

# Sentences of each EPITOME mechanism, written for this test.
EMOTIONAL = ["I'm so sorry you're going through this.", "That sounds really painful, and I feel for you.",
             "I'm sad to hear how hard this has been."]
INTERPRETING = ["It sounds like you feel stuck and alone with all of it.",
                "I understand how exhausting it is to carry this every day."]
EXPLORING = ["What has been the hardest part for you?", "Have you been able to talk to anyone about this?"]
OTHER = ["Try to get some rest tonight.", "Maybe write down what happened.", "Things can change with time."]

RACES = ("Black", "White", "Asian", "Hispanic")
GENDERS = ("woman", "man")


def _bits(text: str, seed: Any) -> int:
    return int(hashlib.sha256(f"{seed}\x00{text}".encode()).hexdigest()[:16], 16)


def golden_reply(req: dict[str, Any], text: str) -> str:
    """The reply to one request. Probe prompts (they ask for a JSON object) get a guess read from an
    explicit tag; every other prompt gets 2-4 sentences picked by hash bits. Posts that carry a
    'Black' cue get the emotional sentence less often: a planted gap for the analysis to find."""
    b = _bits(text, req.get("seed"))
    if "JSON" in text and "Questions:" in text:
        race = next((r for r in RACES if re.search(rf"\b{r}\b", text.split("Questions:")[0])), "unknown")
        gender = next((g for g in GENDERS if re.search(rf"\b{g}\b", text.split("Questions:")[0])), "unknown")
        return json.dumps({"race": race, "gender": gender})
    post = text.lower()
    parts = []
    p_emotional = 4 if "black" in post else 8          # out of 10
    if b % 10 < p_emotional:
        parts.append(EMOTIONAL[(b >> 4) % len(EMOTIONAL)])
    if (b >> 8) % 10 < 5:
        parts.append(INTERPRETING[(b >> 12) % len(INTERPRETING)])
    parts.append(OTHER[(b >> 16) % len(OTHER)])
    if (b >> 20) % 10 < 4:
        parts.append(EXPLORING[(b >> 24) % len(EXPLORING)])
    return " ".join(parts)


def golden_server() -> StubServer:
    return StubServer(reply=golden_reply, model="golden-model")
