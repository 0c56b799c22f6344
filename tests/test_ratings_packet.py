"""Rating packets: the stratified sample covers every model x cue type x group and the control, the
packet files are blinded (no group, cue type or model label, no request key anywhere), each rater
has an own order and own item ids, overlap items reach every rater, the Label Studio config is valid
XML with the right choices, untrusted replies stay text, and the store records the packet."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.cli import main as cli_main
from audit.errors import AuditError
from audit.ratings import make_packet
from audit.ratings.packet import allocate
from audit.store import RunStore
from synthetic_store import CUES, GROUPS, HOSTILE_REPLY, fill_store


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return fill_store(tmp_path_factory.mktemp("packet") / "run", with_results=False, with_probe=False)


@pytest.fixture(scope="module")
def packet(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pk") / "packet"
    return make_packet(run, n=45, raters=3, overlap=9, out=out, seed=11)


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*")) if p.is_file())


def test_the_sample_covers_every_stratum_with_equal_allocation(run, packet):
    groups = [f"{r} {g}" for r, g in GROUPS]
    want = {f"embedded | {c} | {g}" for c in CUES for g in groups} | {"embedded | control | control"}
    assert set(packet.strata["stratum"]) == want
    sizes = packet.strata["n"]
    assert sizes.sum() == 45 and sizes.max() - sizes.min() <= 1  # 45 over 9 strata: 5 each
    with RunStore(run, create=False) as st:
        rep = st.replies_df(include_failed=False).set_index("request_key")
    picked = rep.loc[packet.items["request_key"].unique()]
    assert (picked["status"] == "ok").all()
    # spread over the posts within a stratum: 5 from 3 posts -> 2, 2, 1 (never 3 from one post)
    per_post = picked.groupby(["group_name", "cue_type", "post_id"]).size()
    assert per_post.max() <= 2


def test_allocation_gives_a_full_stratum_s_share_to_the_others():
    alloc = allocate({"a": 2, "b": 50, "c": 50}, 30, np.random.default_rng(1))
    assert alloc == {"a": 2, "b": 14, "c": 14}


def test_packet_files_are_blinded(run, packet):
    text = _all_text(packet.out_dir)
    with RunStore(run, create=False) as st:
        rep = st.replies_df()
        variants = st.variants_df()
    forbidden = [f"{r} {g}" for r, g in GROUPS] + ["Black", "White", "woman"] + list(CUES) + ["explicit", "implicit"]
    forbidden += ["embedded", "SmolLM2", "control"]
    forbidden += [c for c in variants["cue_text"].dropna().unique() if c]  # the names and tags
    for word in forbidden:
        assert word not in text, word
    for key in rep["request_key"]:
        assert key not in text and key[:16] not in text


def test_each_rater_has_own_ids_and_order_and_the_overlap_items(packet):
    items = packet.items
    assert sorted(items["rater"].unique()) == ["r1", "r2", "r3"]
    shared = items[items["overlap"] == 1]
    assert shared["request_key"].nunique() == 9
    assert (shared.groupby("request_key")["rater"].nunique() == 3).all()
    own = items[items["overlap"] == 0]
    assert own["request_key"].nunique() == len(own) == 36  # each non-overlap reply goes to one rater
    assert items["item_id"].is_unique  # one id per (rater, reply): ids cannot be matched across raters
    orders = [tuple(shared[shared["rater"] == r].sort_values("position")["request_key"]) for r in ("r1", "r2", "r3")]
    assert len(set(orders)) == 3
    for r in ("r1", "r2", "r3"):
        csv = pd.read_csv(packet.out_dir / r / "ratings.csv", dtype=str, keep_default_na=False)
        mine = items[items["rater"] == r].sort_values("position")
        assert csv["item_id"].tolist() == mine["item_id"].tolist()
        assert list(csv.columns) == ["item_id", "post", "reply", "er", "ip", "ex", "harmful", "comment"]
        assert (csv[["er", "ip", "ex", "harmful", "comment"]] == "").all().all()
        tasks = json.loads((packet.out_dir / r / "label-studio-tasks.json").read_text(encoding="utf-8"))
        assert [t["data"]["item_id"] for t in tasks] == mine["item_id"].tolist()
        assert all(set(t["data"]) == {"item_id", "post", "reply"} and t["data"]["reply"] for t in tasks)


def test_posts_are_shown_without_their_cue(run, packet):
    with RunStore(run, create=False) as st:
        variants = st.variants_df()
    controls = set(variants.loc[variants["cue_type"] == "control", "text"])
    tasks = json.loads((packet.out_dir / "r1" / "label-studio-tasks.json").read_text(encoding="utf-8"))
    assert {t["data"]["post"] for t in tasks} <= controls


def test_label_studio_config_is_valid_xml_with_the_right_choices(packet):
    root = ET.fromstring((packet.out_dir / "label-studio" / "config.xml").read_text(encoding="utf-8"))
    assert root.tag == "View"
    texts = {t.get("name"): t.get("value") for t in root.iter("Text")}
    assert texts == {"post": "$post", "reply": "$reply"}
    choices = {c.get("name"): c for c in root.iter("Choices")}
    for name in ("er", "ip", "ex"):
        assert choices[name].get("toName") == "reply" and choices[name].get("choice") == "single"
        assert [c.get("value") for c in choices[name].iter("Choice")] == ["0", "1", "2"]
    assert [c.get("value") for c in choices["harmful"].iter("Choice")] == ["harmful", "not harmful"]
    (area,) = list(root.iter("TextArea"))
    assert area.get("name") == "comment" and area.get("toName") == "reply"


def test_untrusted_replies_stay_text_in_the_html_and_csv(run, tmp_path):
    with RunStore(run, create=False) as st:
        rep = st.replies_df(include_failed=False)
    n_replies = len(rep)
    # a packet of every reply holds the hostile one
    pk = make_packet(run, n=n_replies, raters=1, out=tmp_path / "all", seed=1)
    html = (pk.out_dir / "r1" / "packet.html").read_text(encoding="utf-8")
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x onerror=" in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert html.count('class="item"') == n_replies
    csv = pd.read_csv(pk.out_dir / "r1" / "ratings.csv", dtype=str, keep_default_na=False)
    assert HOSTILE_REPLY in set(csv["reply"])


def test_formula_like_replies_are_defused_in_the_csv(tmp_path):
    run = fill_store(tmp_path / "run", with_results=False, with_probe=False)
    with RunStore(run) as st:
        key = st.replies_df(include_failed=False)["request_key"].iloc[0]
        with st.transaction() as c:  # a reply a spreadsheet would run as a formula
            c.execute("UPDATE replies SET text=? WHERE request_key=?", ("=HYPERLINK(\"http://x\")", key))
        n = len(st.replies_df(include_failed=False))
    pk = make_packet(run, n=n, raters=1, out=tmp_path / "p", seed=1)
    csv = pd.read_csv(pk.out_dir / "r1" / "ratings.csv", dtype=str, keep_default_na=False)
    assert "'=HYPERLINK(\"http://x\")" in set(csv["reply"])


def test_the_store_records_the_packet_and_the_same_seed_draws_the_same_sample(run, packet, tmp_path):
    with RunStore(run, create=False) as st:
        packets = st.rating_packets_df()
        items = st.rating_items_df()
    row = packets[packets["packet_id"] == packet.packet_id].iloc[0]
    assert row["n_items"] == 45 and row["overlap"] == 9 and json.loads(row["raters_json"]) == ["r1", "r2", "r3"]
    assert json.loads(row["options_json"])["allocation"] == "equal"
    mine = items[items["packet_id"] == packet.packet_id]
    assert len(mine) == 9 * 3 + 36
    again = make_packet(run, n=45, raters=3, overlap=9, out=tmp_path / "again", seed=11)
    assert set(again.items["request_key"]) == set(packet.items["request_key"])
    assert set(again.items["item_id"]).isdisjoint(packet.items["item_id"])  # a new salt: new ids
    other = make_packet(run, n=45, raters=3, overlap=9, out=tmp_path / "other", seed=12)
    assert set(other.items["request_key"]) != set(packet.items["request_key"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=5, raters=2), "cannot cover the run's 9 strata"),
    (dict(n=10_000, raters=2), "more than the"),
    (dict(n=20, raters=2, overlap=21), "--overlap 21"),
    (dict(n=20, raters=["ann", "../x"]), "rater id '../x'"),
    (dict(n=20, raters=0), "at least one rater"),
])
def test_bad_packet_requests_get_one_clear_error(run, tmp_path, kwargs, message):
    with pytest.raises(AuditError, match=message.replace("(", r"\(")):
        make_packet(run, out=tmp_path / "p", seed=1, **kwargs)
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())


def test_the_cli_refuses_a_non_empty_folder_and_writes_a_packet(run, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    assert cli_main(["ratings", "packet", str(run), "--n", "18", "--raters", "ann,bo", "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (full / "x").read_text() == "keep me"
    assert cli_main(["ratings", "packet", str(run), "--n", "18", "--raters", "ann,bo", "--out",
                     str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "18 replies from 9 strata" in out and "ann:" in out and "bo:" in out
    manifest = json.loads((tmp_path / "new" / "manifest.json").read_text())
    assert manifest["distinct_replies"] == 18 and manifest["raters"] == ["ann", "bo"]


def test_every_model_gets_its_own_strata_and_control():
    rows = []
    for model in ("model-a", "model-b"):
        for post in range(6):
            rows.append(dict(request_key=f"{model}-{post}-c", model_label=model, cue_type="control", group="control",
                             post_id=f"p{post}"))
            for cue in ("explicit_tag", "implicit_name"):
                for g in ("G1", "G2", "G3"):
                    rows.append(dict(request_key=f"{model}-{post}-{cue}-{g}", model_label=model, cue_type=cue,
                                     group=g, post_id=f"p{post}"))
    replies = pd.DataFrame(rows)
    replies["stratum"] = replies["model_label"] + " | " + replies["cue_type"] + " | " + replies["group"]
    from audit.ratings.packet import stratified_sample

    sample = stratified_sample(replies, 28, seed=2)
    counts = sample.groupby(["model_label", "cue_type", "group"]).size()
    assert len(counts) == 14 and (counts == 2).all()  # 2 models x (2 cue types x 3 groups + control)
    assert (sample.groupby("stratum")["post_id"].nunique() == 2).all()  # two replies: two different posts
