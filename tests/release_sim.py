"""Synthetic counterfactual releases shaped like real ones (issue 27), for tests/test_import_replication.py
and docs/replication.md.

:func:`sampled_release` writes one headerless TSV of (post, reply) per condition (``control``, ``Black``,
``White``), with K sampled replies per post in consecutive rows (the post text repeated), fields quoted
where they hold quotes, tabs or newlines (replies have line breaks), and optionally:

- ``placeholder``: a share of replies replaced by the failure placeholder ``ERROR!`` (6 characters);
- ``mislabel``: ``White.tsv`` holds the ``Black`` posts (their cue), with other reply samples;
- ``white_cue``: the cue ``White.tsv``'s posts carry (default ``As a White woman,``);
- ``same_replies``: ``White.tsv``'s reply column is ``Black.tsv``'s;
- ``shuffle``: the replies of one condition's file shuffled across its rows.

Replies echo words of their own post (as real replies do), so the reply-post relevance check can tell
a shuffled file. The planted effects on reply length (words): Black replies 5 words shorter; each
(post, condition) has its own offset (SD ~4 words) shared by its K samples; samples vary by +-2 words.
Everything is made up; nothing is a finding about any model.
"""

from __future__ import annotations

import csv
import random
import string
from pathlib import Path
from typing import Any

import yaml

GROUPS = ("control", "Black", "White")
TOPICS = ["work", "sleep", "family", "money", "school", "friends", "health", "grief", "moving", "exams"]
PLACEHOLDER = "ERROR!"


def post_text(i: int) -> str:
    """Post i: a topic, made-up words (two posts are never close) and a quoted phrase."""
    r = random.Random(2000 + i)
    words = [("".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(4, 9)))) for _ in range(16)]
    return f'Post {i} about {TOPICS[i % len(TOPICS)]}: {" ".join(words[:8])}, "{words[8]} {words[9]}" {" ".join(words[10:])}.'


def _content_words(post: str) -> list[str]:
    return [w.strip('.,"') for w in post.split()[4:] if len(w.strip('.,"')) >= 4]


def reply_text(rng: random.Random, post: str, words: int) -> str:
    """A reply that echoes three words of its post, on two lines, ``words`` words long in all."""
    echo = rng.sample(_content_words(post), 3)
    head = f'You wrote "{echo[0]} {echo[1]}", and that sounds hard.\nI hear you about {echo[2]}.'
    n = max(words - len(head.split()), 1)
    return head + " " + " ".join((["Take", "care", "of", "yourself", "today", "please"] * 20)[:n])


def sampled_release(root: Path, *, k: int = 4, n_posts: int = 12, seed: int = 7, declare: str | None = "rows_per_post",
                    placeholder: float = 0.0, mislabel: bool = False, white_cue: str = "As a White woman, ",
                    same_replies: bool = False, shuffle: str | None = None, quoting: bool = True,
                    spec_extra: dict[str, Any] | None = None) -> Path:
    """Write the release under ``root`` and its import spec; returns the spec's path (module doc).
    ``declare``: ``rows_per_post`` (K), ``samples`` / ``posts`` (``repeated_posts``), or None."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    cues = {"control": "", "Black": "As a Black woman, ", "White": white_cue}
    replies: dict[str, list[str]] = {}
    posts: dict[str, list[str]] = {}
    for g in GROUPS:
        cue = cues["Black"] if (g == "White" and mislabel) else cues[g]
        ps, rs = [], []
        for i in range(n_posts):
            offset = rng.gauss(0, 4)  # this post x condition's own length: shared by its K samples
            for _ in range(k):
                words = round(34 + offset - (5 if g == "Black" else 0) + rng.uniform(-2, 2))
                ps.append(cue + post_text(i))
                rs.append(reply_text(rng, post_text(i), words))
        posts[g], replies[g] = ps, rs
    if same_replies:
        replies["White"] = list(replies["Black"])
    if placeholder:
        for g in GROUPS:
            replies[g] = [PLACEHOLDER if rng.random() < placeholder else r for r in replies[g]]
    if shuffle:
        rng.shuffle(replies[shuffle])
    for g in GROUPS:
        with open(root / f"{g}.tsv", "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            for p, r in zip(posts[g], replies[g]):
                w.writerow([p, r])
    spec: dict[str, Any] = {
        "name": "sampled-release", "match": "rows", "control": "control", "axes": ["race"],
        "columns": {"variant": "post", "reply": "reply"}, "cue_type": "explicit_statement",
        "files": [{"path": f"{g}.tsv", "header": False, "columns": ["post", "reply"], "values": {"race": g},
                   **({"quoting": "csv"} if quoting else {})} for g in GROUPS],
    }
    if declare == "rows_per_post":
        spec["rows_per_post"] = k
    elif declare in ("samples", "posts"):
        spec["repeated_posts"] = declare
    spec.update(spec_extra or {})
    (root / "import.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return root / "import.yaml"


def placeholders_by_group(root: Path) -> dict[str, int]:
    """How many replies of each condition's file are the placeholder."""
    out = {}
    for g in GROUPS:
        with open(root / f"{g}.tsv", encoding="utf-8", newline="") as fh:
            out[g] = sum(1 for row in csv.reader(fh, delimiter="\t") if row[1] == PLACEHOLDER)
    return out
