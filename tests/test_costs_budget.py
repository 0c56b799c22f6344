"""The cost plan and the budget guard (issue 30) against a local OpenAI-compatible server.

* ``plan`` on analyses/can-ai-relate.yaml counts exactly the requests ``run`` sends, per model and
  purpose (checked on its design cut to two posts, run end to end against the golden server), and
  results.json ``spend`` carries the tokens of the server's usage fields.
* The budget guard stops a run before the request that could pass the budget, everything answered
  stays stored, and a resume with a higher budget completes the run without sending any request twice.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from audit.cli import main as cli_main
from audit.costs import BudgetGuard, estimate_prompt_tokens, plan_costs, price_for
from audit.errors import AuditError
from audit.spec import load_spec, spec_from_dict
from audit.store import RunStore
from audit.testing import StubServer
from golden_server import golden_reply

ROOT = Path(__file__).resolve().parents[1]


class UsageServer(StubServer):
    """The golden server, adding up the usage fields it sends."""

    def __init__(self) -> None:
        super().__init__(reply=golden_reply, model="golden-model")
        self.usage = Counter()
        self.keys: list[tuple[str, object]] = []

    def _completion(self, req, text, fault):
        out = super()._completion(req, text, fault)
        self.usage["prompt_tokens"] += out["usage"]["prompt_tokens"]
        self.usage["completion_tokens"] += out["usage"]["completion_tokens"]
        self.keys.append((json.dumps(req.get("messages"), sort_keys=True), req.get("seed")))
        return out


def _can_ai_relate(srv: StubServer, tmp: Path, posts: list[str]) -> Path:
    spec = yaml.safe_load((ROOT / "analyses" / "can-ai-relate.yaml").read_text(encoding="utf-8"))
    spec["posts"]["ids"] = posts
    spec["models"][0].update(base_url=srv.base_url, model="gpt-4o-mini")  # priced by the built-in table
    spec["models"][0].pop("api_key_env")
    spec["models"][0].pop("requests_per_minute")  # a local server needs no pacing (the plan then says so)
    spec["samples"] = 1  # five posts (the least the mixed model fits) x 105 variants x 3 styles
    spec["scoring"]["scorers"] = ["length"]  # the requests do not depend on the scorers; the probe stays on
    path = tmp / "can-ai-relate-2.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_plan_of_the_full_replication_design():
    plan = plan_costs(load_spec(ROOT / "analyses" / "can-ai-relate.yaml"), "/nonexistent-run-dir")
    counts = {(r.model_label, r.purpose): r.requests for r in plan.rows}
    assert counts == {("audited-model", "reply"): 61_425, ("audited-model", "probe"): 6_825}
    reply = next(r for r in plan.rows if r.purpose == "reply")
    assert reply.completion_tokens == 61_425 * 400 and reply.cached == 0
    assert reply.price is not None and reply.price.input == 0.15 and "gpt-4o-mini" in reply.price.source
    assert reply.wall_s == pytest.approx(60 * 61_425 / 500)  # requests_per_minute: 500
    assert plan.total_usd == pytest.approx(sum(r.price.cost(r.prompt_tokens, r.completion_tokens) for r in plan.rows))


def test_plan_counts_what_run_sends_and_spend_holds_the_servers_usage(tmp_path, capsys):
    posts = ["depression-01", "grief-01", "anxiety-02", "work_stress-01", "relationship_conflict-01"]
    with UsageServer() as srv:
        path = _can_ai_relate(srv, tmp_path, posts)
        run_dir = tmp_path / "run"
        assert cli_main(["plan", str(path), "--out", str(run_dir), "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert cli_main(["run", str(path), "--out", str(run_dir), "--no-progress"]) == 0
        out = capsys.readouterr().out
        sent = srv.count
        usage = dict(srv.usage)
    planned = {(r["model_label"], r["purpose"]): r["requests"] for r in plan["rows"]}
    n_variants = len(posts) * (1 + 8 * 13)
    assert planned == {("audited-model", "reply"): n_variants * 3, ("audited-model", "probe"): n_variants}
    assert sent == sum(planned.values())  # exactly what the run sent
    assert f"plan: {sent} requests, 0 already answered" in out  # the same lines at the start of run
    with RunStore(run_dir, create=False) as store:
        stored = {(t["model_label"], t["purpose"]): t["requests"] for t in store.token_totals()}
    assert stored == planned
    spend = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["spend"]
    assert sum(r["prompt_tokens"] for r in spend["rows"]) == usage["prompt_tokens"]
    assert sum(r["completion_tokens"] for r in spend["rows"]) == usage["completion_tokens"]
    assert spend["total_usd"] == pytest.approx((usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.6) / 1e6)
    # planned again, everything is answered: nothing left to send or pay
    again = plan_costs(load_spec(path), run_dir)
    assert all(r.cached == r.requests and r.to_send == 0 for r in again.rows), again.lines()
    assert again.total_usd == 0


def _demo_spec(srv: StubServer, tmp: Path, budget: float) -> Path:
    spec = yaml.safe_load((ROOT / "analyses" / "demo.yaml").read_text(encoding="utf-8"))
    spec["models"] = [{"label": "golden", "base_url": srv.base_url, "model": "golden-model", "max_in_flight": 1}]
    spec["prices"] = {"golden-model": {"input": 1.0, "output": 2.0}}
    spec["budget"] = {"usd": budget}
    spec["scoring"]["scorers"] = ["length"]
    path = tmp / "demo-budget.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_budget_stops_before_the_request_that_could_pass_it_and_a_resume_completes(tmp_path, capsys):
    budget = 0.005
    with UsageServer() as srv:
        path = _demo_spec(srv, tmp_path, budget)
        run_dir = tmp_path / "run"
        assert cli_main(["run", str(path), "--out", str(run_dir), "--no-progress"]) == 2
        err = capsys.readouterr().err
        first = srv.count
        assert "budget reached" in err and "--max-usd" in err
        spec = load_spec(path)
        from audit.counterfactual import build_variants
        from audit.engine import planned_keys
        from audit.generate import _identity, reply_items
        from audit.prompts import styles_for_spec

        items = list(reply_items(build_variants(spec), styles_for_spec(spec), 1))  # the order the run sends
        keys = list(planned_keys(spec.models[0], spec.decoding, items, base_seed=spec.seed,
                                 identity=_identity(spec.models[0])))
        with RunStore(run_dir, create=False) as store:
            usage = {u["request_key"]: u for u in store.usage_of(keys)}
            guard = BudgetGuard.from_store(store, "golden")
        assert 0 < len(usage) == first < 102 and set(usage) == set(keys[:first])  # all answered ones stored

        def actual(k):  # the price of the tokens the server reported for request k
            return (usage[keys[k]]["prompt_tokens"] * 1.0 + usage[keys[k]]["completion_tokens"] * 2.0) / 1e6

        def worst(k):  # the most request k could cost: its prompt estimate and max_tokens
            return (estimate_prompt_tokens(items[k]["messages"]) * 1.0 + spec.decoding.max_tokens * 2.0) / 1e6

        spent = 0.0
        for k in range(first):  # every sent request fitted: what was spent before it plus its worst case
            assert spent + worst(k) <= budget
            spent += actual(k)
        assert spent + worst(first) > budget  # the first one refused could have passed the budget
        assert guard.spent == pytest.approx(spent) and spent <= budget
        # resume with a higher budget: the rest is sent, nothing twice
        assert cli_main(["run", str(path), "--out", str(run_dir), "--no-progress", "--max-usd", "1"]) == 0
        assert srv.count == 102
        assert len(set(srv.keys)) == len(srv.keys) == 102
    rj = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert rj["spend"]["budget_usd"] == 1.0
    assert sum(r["requests"] for r in rj["spend"]["rows"]) == 102


def test_budget_needs_a_price_for_every_model(tmp_path):
    with UsageServer() as srv:
        path = _demo_spec(srv, tmp_path, 1.0)
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
        d.pop("prices")
        path.write_text(yaml.safe_dump(d), encoding="utf-8")
        assert cli_main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
        assert srv.count == 0


def test_prices_resolve_from_command_line_spec_and_table():
    spec = spec_from_dict({"name": "x", "models": [{"label": "a", "base_url": "http://h/v1", "model":
                                                    "gpt-4o-mini-2024-07-18"}],
                           "prices": {"a": {"input": 9, "output": 10}}})
    m = spec.models[0]
    assert price_for(m, spec).input == 9  # the spec's prices, by label
    assert price_for(m, None).input == 0.15  # the table, by the longest prefix (not gpt-4o)
    assert price_for(m, spec, price_in=1, price_out=2).output == 2
    with pytest.raises(AuditError):
        price_for(m, spec, price_in=1)
    assert spec_from_dict({"name": "x"}).canonical_json == spec_from_dict({"name": "x"}).canonical_json
    assert "budget" not in spec_from_dict({"name": "x"}).model_dump() and "prices" not in \
        spec_from_dict({"name": "x"}).model_dump()


def test_a_batch_that_could_pass_the_budget_is_not_uploaded(tmp_path, capsys):
    from audit.testing import BatchOptions

    spec = {"name": "batch", "posts": {"limit": 5},
            "demographics": {"axes": ["race"], "cue_types": ["explicit_tag"], "alternatives": 1},
            "decoding": {"max_tokens": 64, "seed": 3},
            "prices": {"golden-model": {"input": 1.0, "output": 2.0}},  # batch: half of it
            "scoring": {"scorers": ["length"], "inference_probe": False}}
    with StubServer(reply=golden_reply, model="golden-model", batch=BatchOptions()) as srv:
        spec["models"] = [{"label": "golden", "base_url": srv.base_url, "model": "golden-model",
                           "execution": "batch", "batch": {"max_requests": 10}}]
        path = tmp_path / "batch.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        run = tmp_path / "run"
        # each batch of ten costs at most about 10 x (100 + 64 x 2) / 2 / 1e6 = $0.0011 at batch prices
        assert cli_main(["run", str(path), "--out", str(run), "--no-progress", "--max-usd", "0.0015"]) == 2
        err = capsys.readouterr().err
        assert "was not uploaded" in err and "higher budget" in err
        with RunStore(run, create=False) as st:
            states = [b["state"] for b in st.batches()]
        assert states.count("submitted") == 1 and srv.batch_creates == 1 == len(srv.files)  # one fitted
        assert "prepared" in states  # the rest kept, not uploaded
        assert cli_main(["run", str(path), "--out", str(run), "--no-progress", "--max-usd", "1"]) == 0
        assert cli_main(["run", str(path), "--out", str(run), "--no-progress", "--max-usd", "1"]) == 0
        with RunStore(run, create=False) as st:
            assert all(b["state"] in ("collected", "completed") for b in st.batches()), \
                [b["state"] for b in st.batches()]


def test_pilot_measures_completion_tokens_and_the_run_reuses_its_replies(tmp_path, capsys):
    with UsageServer() as srv:
        path = _demo_spec(srv, tmp_path, 1.0)
        run_dir = tmp_path / "run"
        assert cli_main(["plan", str(path), "--out", str(run_dir), "--pilot", "3", "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert srv.count == 3
        reply = next(r for r in plan["rows"] if r["purpose"] == "reply")
        mean = srv.usage["completion_tokens"] / 3  # the server's usage fields of the pilot's replies
        assert reply["completion_method"] == f"pilot mean {mean:.1f} per reply"
        assert reply["cached"] == 3 and reply["completion_tokens"] == pytest.approx(mean * (102 - 3))
        assert cli_main(["run", str(path), "--out", str(run_dir), "--no-progress"]) == 0
        assert srv.count == 102 and len(set(srv.keys)) == 102  # the pilot's three were not sent again
