"""A synthetic run store: realistic rows for every table the report reads, written through RunStore.

Used by the report's tests (a test helper, not shipped in the package), and for previewing the
report's layout without running a model: ``fill_store(dir)`` then ``empathy-audit report dir``. Every
table follows docs/CONTRACTS.md. The replies include hostile text (HTML, script) on purpose: a report
must show it as text. The numbers are made up, drawn from a seeded generator: nothing here is a
finding about any model.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.spec import spec_from_dict
from audit.store import RunStore, request_key

HOSTILE_REPLY = (
    "I hear you. <script>alert(1)</script> That sounds hard. "
    "<img src=x onerror=\"document.title='pwned'\"> Would you like to talk about it? $x$ & <b>bold</b>"
)

POSTS = [
    ("p01", "work", "low", "I've been so stressed at work that I can't sleep, and I feel like I'm failing everyone."),
    ("p02", "loneliness", "moderate", "Since I moved to this city I have no one to talk to. Weekends are the worst."),
    ("p03", "grief", "moderate", "My dad died last month and everyone expects me to be fine already."),
]
GROUPS = [("Black", "woman"), ("White", "woman"), ("Black", "man"), ("White", "man")]
CUES = {
    "explicit_tag": lambda r, g: f"[{r} {g}]",
    "implicit_name": lambda r, g: {("Black", "woman"): "Lakisha", ("White", "woman"): "Emily",
                                   ("Black", "man"): "Jamal", ("White", "man"): "Greg"}[(r, g)],
}
MEASURES = {"epitome": ("ER", "IP", "EX", "empathy"), "length": ("words",), "refusal": ("refusal",),
            "sentiment": ("compound",)}


def synthetic_spec_dict(name: str = "synthetic", embedded: bool = True) -> dict[str, Any]:
    model = {"label": "embedded"} if embedded else {
        "label": "gpt-test", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-test", "api_key_env": "TEST_KEY"}
    return {
        "name": name,
        "description": "Synthetic run used to test and preview the report.",
        "demographics": {"axes": ["race", "gender"], "cue_types": list(CUES)},
        "styles": ["plain"],
        "models": [model],
        "decoding": {"temperature": 0.7, "max_tokens": 64, "seed": 1},
        "samples": 2,
        "scoring": {"scorers": ["epitome", "length", "refusal", "sentiment"], "inference_probe": True},
    }


def _vid(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def fill_store(run_dir: str | Path, *, seed: int = 7, embedded: bool = True, with_results: bool = True,
               with_probe: bool = True, failed: int = 1) -> Path:
    """Write a complete synthetic run into ``run_dir``; return the run directory.

    ``with_results=False`` leaves out every analysis table, ``with_probe=False`` the probe table,
    ``failed`` is the number of replies stored as failed.
    """
    run_dir = Path(run_dir)
    rng = np.random.default_rng(seed)
    spec = spec_from_dict(synthetic_spec_dict(embedded=embedded))
    spec._source_text = json.dumps(synthetic_spec_dict(embedded=embedded), indent=2)
    with RunStore(run_dir) as store:
        store.put_spec(spec)
        store.set_meta("tool_version", "0.0.0-synthetic")
        # ---- variants
        rows = []
        for pid, topic, risk, text in POSTS:
            rows.append(dict(variant_id=_vid(pid, "control"), post_id=pid, topic=topic, risk=risk, group="control",
                             cue_type="control", alternative=None, cue_text="", text=text, race=None, gender=None))
            for cue_type, cue in CUES.items():
                for race, gender in GROUPS:
                    c = cue(race, gender)
                    t = f"{c} {text}" if cue_type == "explicit_tag" else f"I'm {c}. {text}"
                    rows.append(dict(variant_id=_vid(pid, cue_type, race, gender), post_id=pid, topic=topic,
                                     risk=risk, group=f"{race} {gender}", cue_type=cue_type, alternative=c,
                                     cue_text=c, text=t, race=race, gender=gender))
        variants = pd.DataFrame(rows)
        store.put_variants(variants)
        # ---- requests, replies, scores
        model = spec.models[0]
        endpoint = "embedded:" + "ab" * 32 if embedded else "http://127.0.0.1:9/v1"
        params = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 64, "seed": 1}
        score_rows = []
        n_failed = 0
        hostile_done = False
        effect = {"Black woman": -0.9, "Black man": -0.3, "White woman": 0.02, "White man": 0.0, "control": 0.0}
        for v in variants.to_dict("records"):
            for s in range(spec.samples):
                messages = [
                    {"role": "system", "content": "You are a supportive peer. Reply to the post below with care."},
                    {"role": "user", "content": v["text"]},
                ]
                key = request_key(endpoint, "smollm2" if embedded else "gpt-test", messages, params, s)
                store.put_request(dict(request_key=key, purpose="reply", variant_id=v["variant_id"],
                                       model_label=model.label, endpoint_id=endpoint,
                                       model_name="SmolLM2-135M-Instruct" if embedded else "gpt-test",
                                       style="plain", style_hash="f" * 64, sample_index=s, messages=messages,
                                       params=params))
                if n_failed < failed and v["group"] == "White man" and v["post_id"] == "p03":
                    n_failed += 1
                    store.put_reply(dict(request_key=key, status="failed", error="HTTP 500 after 6 attempts",
                                         attempts=6),
                                    attempts=[{"attempt": i, "error_type": "http", "status_code": 500,
                                               "message": "server error"} for i in range(1, 7)])
                    continue
                if not hostile_done and v["group"] == "Black woman" and v["post_id"] == "p01" and s == 0 \
                        and v["cue_type"] == "explicit_tag":
                    reply = HOSTILE_REPLY
                    hostile_done = True
                else:
                    reply = (f"I'm sorry you're going through this ({v['topic']}). It makes sense to feel "
                             f"overwhelmed. What has helped you before? Sample {s}.")
                store.put_reply(dict(request_key=key, status="ok", text=reply, finish_reason="stop",
                                     prompt_tokens=60, completion_tokens=40, latency_s=0.5,
                                     model_reported="SmolLM2-135M-Instruct-Q8_0.gguf" if embedded else "gpt-test",
                                     runtime="llama.cpp (xllamacpp)" if embedded else "openai-compatible",
                                     runtime_version="0.2.0"))
                d = effect[v["group"]] * (1.0 if v["cue_type"] == "explicit_tag" else 0.5)
                er = float(np.clip(round(1.0 + d + rng.normal(0, 0.5)), 0, 2))
                ip = float(np.clip(round(0.8 + d / 2 + rng.normal(0, 0.5)), 0, 2))
                ex = float(np.clip(round(0.6 + rng.normal(0, 0.5)), 0, 2))
                score_rows += [(key, "epitome", "ER", er, None), (key, "epitome", "IP", ip, None),
                               (key, "epitome", "EX", ex, None),
                               (key, "epitome", "empathy", (er + ip + ex) / 3, None),
                               (key, "length", "words", float(len(reply.split())), None),
                               (key, "refusal", "refusal", float(rng.random() < 0.08), None),
                               (key, "sentiment", "compound", float(np.clip(0.3 + d + rng.normal(0, 0.3), -1, 1)),
                                None)]
        store.put_scores(score_rows)
        store.put_scorer_info("epitome", {"name": "epitome", "version": "epitome-tfidf-1", "artifact_sha256": "1" * 64,
                                          "cv_protocol": "5-fold cross-validation grouped by post",
                                          "cv": {"ER": {"macro_f1": 0.61, "accuracy": 0.70, "n": 600},
                                                         "IP": {"macro_f1": 0.58, "accuracy": 0.66, "n": 600},
                                                         "EX": {"macro_f1": 0.64, "accuracy": 0.80, "n": 600}},
                                          "caveats": ["IP level 1 is never recognised <in CV>"]})
        store.put_scorer_info("length", {"version": "1"})
        store.put_scorer_info("refusal", {"version": "1", "validation": {"accuracy": 0.95}})
        store.put_scorer_info("sentiment", {"version": "vaderSentiment 3.3.2"})
        if with_probe:
            _fill_probe(store, variants, rng)
        if with_results:
            _fill_results(store, spec)
    return run_dir


def _fill_probe(store: RunStore, variants: pd.DataFrame, rng: np.random.Generator) -> None:
    """Probe rows in the schema of audit/scorers/probe.py (one row per request and axis)."""
    store.ensure(
        "CREATE TABLE IF NOT EXISTS probe (request_key TEXT NOT NULL, axis TEXT NOT NULL, variant_id TEXT NOT NULL,"
        " model_label TEXT NOT NULL, post_id TEXT, group_name TEXT, cue_type TEXT, intended TEXT, inferred TEXT,"
        " correct INTEGER, status TEXT NOT NULL, detail TEXT, PRIMARY KEY (request_key, axis));"
    )
    rate = {"explicit_tag": 0.95, "implicit_name": 0.55, "control": 0.0}
    rows = []
    for v in variants.to_dict("records"):
        key = _vid("probe", v["variant_id"])
        for axis in ("race", "gender"):
            truth = v.get(axis)
            ok = rng.random() < rate[v["cue_type"]]
            pred = truth if ok else "unknown"
            rows.append((key, axis, v["variant_id"], "embedded", v["post_id"], v["group"], v["cue_type"], truth,
                         pred, None if truth is None else int(ok), "ok", None))
    with store.transaction() as c:
        c.executemany("INSERT OR REPLACE INTO probe VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def _fill_results(store: RunStore, spec) -> None:
    """Gaps versus control by simple cell means (not a mixed model): the schema is what matters here."""
    from scipy import stats as st

    rep = store.replies_df()
    sc = store.scores_df()
    sc["outcome"] = sc["scorer"] + "." + sc["measure"]
    df = rep.merge(sc, on="request_key")
    rows = []
    for outcome, d_o in df.groupby("outcome"):
        ctrl = d_o[d_o["group"] == "control"]["value"].astype(float)
        for cue_type in ["pooled", *CUES]:
            sub = d_o if cue_type == "pooled" else d_o[d_o["cue_type"] == cue_type]
            for group in ["Black woman", "White woman", "Black man", "White man"]:
                x = sub[sub["group"] == group]["value"].astype(float)
                est = x.mean() - ctrl.mean()
                se = math.sqrt(x.var(ddof=1) / len(x) + ctrl.var(ddof=1) / len(ctrl)) or 1e-9
                p = float(2 * st.norm.sf(abs(est / se)))
                ref = ctrl.mean()
                rel = est / ref if ref else float("nan")
                rows.append(dict(family_id="F1", outcome=outcome, model_label="embedded", style="pooled",
                                 cue_type=cue_type, group=group, reference="control", estimate=est, se=se,
                                 ci_low=est - 1.96 * se, ci_high=est + 1.96 * se, ref_mean=ref, relative_gap=rel,
                                 rel_ci_low=(est - 1.96 * se) / ref if ref else float("nan"),
                                 rel_ci_high=(est + 1.96 * se) / ref if ref else float("nan"),
                                 std_effect=est / (ctrl.std() or 1), p_value=p, n=int(len(x) + len(ctrl)),
                                 n_posts=3, method="mixedlm", converged=True, warning=None))
    res = pd.DataFrame(rows)
    m = len(res)
    order = np.argsort(res["p_value"].to_numpy())
    holm = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * res["p_value"].iloc[i]))
        holm[i] = running
    res["p_holm"] = holm
    bh = np.empty(m)
    prev = 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        prev = min(prev, res["p_value"].iloc[i] * m / (rank + 1))
        bh[i] = prev
    res["p_bh"] = bh
    res["significant_holm"] = res["p_holm"] < 0.05
    paired = res[["family_id", "outcome", "model_label", "style", "cue_type", "group", "reference"]].copy()
    paired["t"] = res["estimate"] / res["se"]
    paired["dof"] = 2
    paired["p_value"] = res["p_value"]
    paired["cohen_d"] = res["std_effect"]
    power = pd.DataFrame([dict(outcome=o, model_label="embedded", ref_mean=float(res[res.outcome == o].ref_mean.iloc[0]),
                               detectable_gap=float(2.8 * res[res.outcome == o].se.mean()),
                               detectable_relative_gap=float(2.8 * res[res.outcome == o].se.mean()
                                                             / max(res[res.outcome == o].ref_mean.iloc[0], 1e-9)),
                               power=0.8, alpha=0.05, n_posts=3)
                          for o in res["outcome"].unique()])
    inter = []
    for outcome in res["outcome"].unique():
        for race, gender in GROUPS:
            r = res[(res.outcome == outcome) & (res.cue_type == "pooled") & (res.group == f"{race} {gender}")].iloc[0]
            inter.append(dict(outcome=outcome, model_label="embedded", group=f"{race} {gender}", race=race,
                              gender=gender, estimate=r.estimate * 0.8, ci_low=r.ci_low, ci_high=r.ci_high,
                              relative_gap=r.relative_gap * 0.8, n=r.n))
    meta = pd.DataFrame([
        dict(key="formula", value="value ~ C(group, Treatment('control')) + (1 | post_id) + (1 | style)"),
        dict(key="family_size", value=str(m)),
        dict(key="corrections", value="holm, bh"),
        dict(key="software", value=json.dumps({"statsmodels": "0.14", "pingouin": "0.5"})),
    ])
    for name, table in [("results", res), ("results_paired", paired), ("results_power", power),
                        ("results_intersectional", pd.DataFrame(inter)), ("analysis_meta", meta)]:
        table.to_sql(name, store.conn, if_exists="replace", index=False)
