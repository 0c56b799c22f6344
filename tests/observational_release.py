"""A synthetic data release shaped like the one issue 26 was found on (a test helper, not shipped).

Real support posts, each under one race only (observational: no post is shown under two groups, and
there is no control), unequal groups, GPT-style replies holding quotes, commas, semicolons, tabs and
newlines, written as one long CSV. The replies to "Black" posts carry fewer of the phrases the
EPITOME classifier keys on, so the shipped scorer sees a large Black - White gap; the simulated raters
(:func:`human_truth`) rate those replies a level higher than the scorer, so the gap on the human
scale is near zero: the scorer over-states one group's gap, and only the ratings can show it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import yaml

GROUPS = {"Black": 30, "White": 54}  # unequal groups, one reply per post
TOPICS = ["work", "sleep", "family", "money", "school", "friends", "health"]
#: The group the scorer under-scores (humans rate it :data:`SHIFT` levels above the scorer).
UNDER_SCORED = "Black"
SHIFT = 1.0

EMPATHIC = ["I'm so sorry you're going through this; it sounds \"exhausting\", and that's okay.",
            "That must feel incredibly lonely and painful.",
            "It sounds like you feel you have to carry all of it alone, as if nobody would notice.",
            "What happened when you last talked to someone about it?",
            "How have you been sleeping, and is there anyone you trust nearby?"]
NEUTRAL = ["Here are some options: call a helpline, write things down, take a walk.",
           "Consider \"small steps\": drink water; eat something; rest.",
           "Many people find a routine helps.\tTry one change per week."]


def _post(i: int, group: str) -> str:
    r = random.Random(7000 + i)
    words = " ".join("".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(3, 8)))
                     for _ in range(12))
    return (f"Post {i} about {TOPICS[i % len(TOPICS)]}, as a {group} person: \"{words}\";\n"
            f"I don't know what to do =1+1, honestly.")


def _reply(rng: random.Random, group: str) -> str:
    k = rng.randint(0, 2) if group == UNDER_SCORED else rng.randint(2, 5)
    parts = rng.sample(EMPATHIC, k) + rng.sample(NEUTRAL, rng.randint(1, 2))
    return "\n\n".join(parts) + ("\n- \"You matter.\"" if rng.random() < 0.5 else "")


def write_release(root: Path, *, seed: int = 26) -> Path:
    """``release.csv`` (post_id, race, post, reply) and ``import.yaml`` under ``root``: the import spec
    (no control, reference White, the EPITOME scorer). Returns the import spec's path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows, i = [], 0
    for group, n in GROUPS.items():
        for _ in range(n):
            rows.append(dict(post_id=f"R{i:04d}", race=group, post=_post(i, group), reply=_reply(rng, group)))
            i += 1
    order = rng.sample(range(len(rows)), len(rows))  # the groups interleaved, as a real release is
    pd.DataFrame([rows[j] for j in order]).to_csv(root / "release.csv", index=False)
    spec = {"name": "observational-release", "match": "id", "control": None, "reference": "White",
            "axes": ["race"], "columns": {"post_id": "post_id", "variant": "post", "reply": "reply"},
            "scorers": ["epitome"], "files": [{"path": "release.csv"}]}
    (root / "import.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return root / "import.yaml"


def human_truth(run_dir: Path):
    """The simulated raters' levels: the epitome scorer's level, :data:`SHIFT` higher (clipped to 2)
    on the replies to :data:`UNDER_SCORED` posts, on every mechanism."""
    from ratings_sim import scorer_truth

    return scorer_truth(run_dir, shift={UNDER_SCORED: SHIFT}, measures=("ER", "IP", "EX"))
