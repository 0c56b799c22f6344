"""The audit spec: one YAML file that says what to audit and how.

``load_spec(path)`` reads the YAML, validates it against the typed schema below and returns an
:class:`AuditSpec`. Every model forbids unknown keys, so a typo is an error rather than a silently
ignored setting. A bad spec raises one :class:`~audit.errors.AuditError` naming the file, the key
path (and the YAML line where it can be found), what was expected and what to do.

Relative paths in a spec: ``posts.source`` and ``demographics.templates`` are relative to the spec
file; ``output`` is relative to the current working directory (like any command-line output path).
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from .errors import AuditError
from .resources import sha256_text

CUE_TYPES = (
    "explicit_tag",
    "explicit_statement",
    "implicit_name",
    "implicit_context",
    "implicit_dialect",
)
CueType = Literal[
    "explicit_tag", "explicit_statement", "implicit_name", "implicit_context", "implicit_dialect"
]
RiskLevel = Literal["low", "moderate", "high"]


def _is_number_type(annotation: Any) -> bool:
    """Whether a field's type is a number (int or float, optional or not), and not also a bool."""
    args = typing.get_args(annotation) or (annotation,)
    return bool(set(args) & {int, float}) and bool not in args


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: Any) -> Any:
        # YAML's `true` is not a count: pydantic would take `samples: true` as 1.
        if isinstance(v, bool) and info.field_name in cls.model_fields \
                and _is_number_type(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, got a boolean (true/false)")
        return v


class PostsSpec(StrictModel):
    """Which support posts to audit."""

    source: str = Field(
        "builtin",
        description="'builtin' for the shipped corpus, or a path to a CSV, JSONL or parquet file.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of canonical field (id, text, topic, risk) to the column name in the file.",
    )
    topics: list[str] | None = Field(None, description="Keep only posts with these topics.")
    ids: list[str] | None = Field(None, description="Keep only posts with these ids.")
    risk: list[RiskLevel] | None = Field(None, description="Keep only posts at these risk levels.")
    limit: int | None = Field(None, ge=1, description="Keep the first N posts after filtering.")
    per_topic: int | None = Field(
        None, ge=1, description="Keep at most N posts per topic (applied before limit)."
    )
    skip_empty: bool = Field(
        False, description="Drop rows with an empty text (counted and reported) instead of failing."
    )

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - {"id", "text", "topic", "risk"}
        if unknown:
            raise ValueError(
                f"unknown canonical field(s) {sorted(unknown)}; expected keys among id, text, topic, risk"
            )
        return v


class DemographicsSpec(StrictModel):
    """Which demographic axes, groups and cue types to put into the posts."""

    axes: list[str] = Field(
        default_factory=lambda: ["race", "gender"],
        min_length=1,
        description="Axes (templates/axes/<axis>.yaml) crossed into intersectional groups.",
    )
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Optional subset of levels per axis, e.g. {race: [Black, White]}.",
    )
    fixed: dict[str, str] = Field(
        default_factory=dict,
        description="Attributes held fixed in every variant (e.g. {age: '32'}), stated in cues that need them.",
    )
    cue_types: list[CueType] = Field(
        default_factory=lambda: ["explicit_tag", "explicit_statement", "implicit_name", "implicit_context"],
        min_length=1,
    )
    alternatives: int | None = Field(
        None, ge=1, description="At most N alternatives per (group, cue type); None = all."
    )
    templates: str | None = Field(
        None, description="Directory of templates to use instead of the built-in templates/."
    )
    include_control: bool = Field(True, description="Always true in practice: the unmodified post.")

    @field_validator("groups", mode="after")
    @classmethod
    def _clean_levels(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        """One label rule (audit/labels.py): levels NFC-normalised and stripped; one level spelled two
        ways (``Black`` / ``black ``) is an error naming both."""
        from .labels import clean_label, fold_key

        out: dict[str, list[str]] = {}
        for axis, levels in v.items():
            seen: dict[str, str] = {}
            clean = []
            for lv in levels:
                c = clean_label(lv)
                if c is None:
                    raise ValueError(f"{axis}: an empty level")
                if fold_key(c) in seen:
                    if seen[fold_key(c)] == c:
                        raise ValueError(f"{axis}: level {c!r} is listed twice")
                    raise ValueError(f"{axis}: levels {seen[fold_key(c)]!r} and {lv!r} differ only by case or "
                                     "whitespace; list each level once")
                seen[fold_key(c)] = c
                clean.append(c)
            out[str(clean_label(axis) or axis)] = clean
        return out

    @field_validator("include_control")
    @classmethod
    def _control_required(cls, v: bool) -> bool:
        if not v:
            raise ValueError("the control (unmodified post) is required: every gap is measured against it")
        return v


class AzureSpec(StrictModel):
    endpoint: str
    api_version: str
    deployment: str


# Provider limits of a batch file (docs: platform.openai.com/docs/guides/batch, "Rate limits": at most
# 50,000 requests and 200 MB per input file, a 24 h completion window; Azure OpenAI Global Batch:
# 100,000 requests and 200 MB per file, learn.microsoft.com/azure/ai-foundry/openai/how-to/batch).
# "local": shards that no service is asked to run (``empathy-audit batch run-local``, ``vllm run-batch``).
BATCH_LIMITS: dict[str, dict[str, int]] = {
    "openai": {"max_requests": 50_000, "max_bytes": 200_000_000},
    "azure": {"max_requests": 100_000, "max_bytes": 200_000_000},
    "local": {"max_requests": 50_000, "max_bytes": 200_000_000},
}


class BatchSpec(StrictModel):
    """How a model with ``execution: batch`` is sent its requests (see :mod:`audit.batch`)."""

    provider: Literal["openai", "azure", "local"] | None = Field(
        None, description="Whose batch service: openai (any OpenAI-compatible files+batches API), azure, or local "
        "(shards only, for batch run-local or vllm run-batch). Default: azure for an azure model, else openai.")
    max_requests: int | None = Field(None, ge=1, le=1_000_000,
                                     description="Requests per batch file (default: the provider's limit).")
    max_bytes: int | None = Field(None, ge=1_000, le=2_000_000_000,
                                  description="Bytes per batch file (default: the provider's limit).")
    completion_window: str = Field("24h", description="The completion window asked of the provider.")
    poll_interval_s: float = Field(30.0, gt=0, description="Seconds between polls with run --wait.")
    max_attempts: int = Field(3, ge=1, le=100, description="Batches a request is collected from before it is no "
                              "longer resubmitted by itself (it stays failed, and the run goes on without it).")

    def limits(self, model: "ModelSpec") -> tuple[str, int, int]:
        """(provider, max requests per file, max bytes per file) of ``model``."""
        provider = self.provider or ("azure" if model.azure is not None else "openai")
        lim = BATCH_LIMITS[provider]
        return provider, self.max_requests or lim["max_requests"], self.max_bytes or lim["max_bytes"]


class ModelSpec(StrictModel):
    """One audited model. No endpoint means the embedded default model."""

    label: str = Field("embedded", pattern=r"^[A-Za-z0-9_.:-]+$")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    model: str | None = Field(None, description="Model name sent to the endpoint.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key itself)."
    )
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    azure: AzureSpec | None = None
    max_in_flight: int = Field(4, ge=1, le=1024)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0, le=50)
    execution: Literal["online", "batch"] = Field(
        "online", description="online: one request at a time as the run goes; batch: through the provider's "
        "batch service (half the price, replies within its window; see docs/guide/large-audits.md).")
    batch: BatchSpec = Field(default_factory=BatchSpec)

    @property
    def is_embedded(self) -> bool:
        return self.base_url is None and self.azure is None

    @model_serializer(mode="wrap")
    def _omit_default_execution(self, handler: Any) -> dict[str, Any]:
        # A spec that does not use batch execution serializes (and hashes) as it did before the
        # execution and batch keys existed, so existing runs keep their spec hash.
        d = handler(self)
        if isinstance(d, dict) and d.get("execution") == "online" and self.batch == BatchSpec():
            d.pop("execution", None)
            d.pop("batch", None)
        return d

    @model_validator(mode="after")
    def _endpoint_consistent(self) -> "ModelSpec":
        if self.base_url is not None and self.azure is not None:
            raise ValueError("give either base_url or azure, not both")
        if not self.is_embedded and not self.model and self.azure is None:
            raise ValueError("a model name is required when base_url is given")
        if self.execution == "batch" and self.is_embedded:
            raise ValueError("execution: batch needs an endpoint (base_url or azure); for the embedded model use "
                             "execution: online, or 'empathy-audit batch run-local' with --base-url")
        for k in self.headers:
            if k.lower() in ("authorization", "api-key", "x-api-key"):
                raise ValueError(
                    f"header {k!r} would put a secret in the spec; name the variable in api_key_env instead"
                )
        return self


class DecodingSpec(StrictModel):
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1, le=32768)
    seed: int | None = Field(
        None, description="Base seed; each request gets a seed derived from it and the sample index."
    )


class JudgeSpec(StrictModel):
    """A model used as a judge (llm-judge scorer) or for the demographic inference probe."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    decoding: DecodingSpec = Field(default_factory=lambda: DecodingSpec(temperature=0.0, max_tokens=200))
    response_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema",
        description="Ask the endpoint for JSON output (json_schema: constrained to the answer schema; "
        "json_object: any JSON; none: for endpoints that reject response_format). Answers are parsed "
        "strictly either way.",
    )


class HFClassifierSpec(StrictModel):
    """Local transformers sequence-classification checkpoints for the hf-classifier scorer."""

    checkpoints: dict[Literal["ER", "IP", "EX"], str] = Field(
        ..., min_length=1,
        description="Checkpoint directory per mechanism (relative to the spec file); 3 labels = levels 0/1/2.",
    )
    input: Literal["pair", "reply"] = Field("pair", description="pair: (seeker post, reply); reply: the reply alone.")
    max_length: int = Field(512, ge=8, le=8192)
    batch_size: int = Field(16, ge=1, le=4096)
    device: str | None = Field(None, description="torch device, e.g. 'cuda'; default CPU.")


class ScoringSpec(StrictModel):
    scorers: list[str] = Field(
        default_factory=lambda: ["epitome", "length", "refusal", "sentiment"], min_length=1
    )
    judge: JudgeSpec | None = None
    hf_classifier: HFClassifierSpec | None = Field(None, description="Checkpoints for the hf-classifier scorer.")
    inference_probe: bool = Field(True, description="Ask a model which group a variant's author belongs to.")
    probe_model: JudgeSpec | None = Field(
        None, description="Model for the inference probe; default: the first audited model."
    )


def parse_margin(value: float | str) -> tuple[float, str]:
    """An equivalence margin as written in ``analysis.margins`` -> (size, kind).

    ``kind`` is ``absolute`` (a number in the measure's unit: ``0.1``), ``relative`` (a share of the
    reference mean: ``"5%"`` -> 0.05) or ``points`` (percentage points of a rate: ``"2pp"`` -> 0.02,
    an absolute margin on the 0-1 scale). Raises ValueError for anything else, zero or a negative.

    >>> parse_margin("5%"), parse_margin("2 pp"), parse_margin(0.1)
    ((0.05, 'relative'), (0.02, 'points'), (0.1, 'absolute'))
    """
    if isinstance(value, bool):
        raise ValueError("expected a number, '5%' or '2pp', got a boolean")
    t = str(value).strip().lower().replace(" ", "")
    kind, scale = "absolute", 1.0
    if t.endswith("%"):
        t, kind, scale = t[:-1], "relative", 0.01
    elif t.endswith("pp"):
        t, kind, scale = t[:-2], "points", 0.01
    try:
        size = float(t) * scale
    except ValueError:
        raise ValueError(f"cannot read the margin {value!r}; write a number in the measure's unit (0.1), "
                         "a share of the reference mean ('5%') or percentage points of a rate ('2pp')") from None
    if not (size > 0 and size == size and size != float("inf")):
        raise ValueError(f"the margin {value!r} must be a positive number")
    if kind == "relative" and size >= 1:
        raise ValueError(f"the relative margin {value!r} must be below 100%")
    return size, kind


class AnalysisSpec(StrictModel):
    outcomes: list[str] | None = Field(None, description="Scores to test; default: every stored score.")
    reference: str = Field("control", description="Reference group for gaps.")
    extra_references: list[str] = Field(default_factory=list)
    reference_group: str | None = Field(
        None, description="Reference of the between-group disparities: a group ('White man') or a level of an "
                          "axis ('White': each group against the group with that level and the same other levels).")
    reference_model: str | None = Field(
        None, description="With several models: the label of the model whose gaps the others' gaps are compared "
                          "with (results_models: difference of gaps, CI, p). Default: the first model of the "
                          "models list. Stating it with analysis.primary makes the comparisons confirmatory.")
    alpha: float = Field(0.05, gt=0, lt=1)
    corrections: list[Literal["holm", "bh"]] = Field(
        default_factory=lambda: ["holm", "bh"],
        description="Always both: Holm (family-wise error rate; significance is called on it) and "
                    "Benjamini-Hochberg (false discovery rate), over the whole family of tests.",
    )
    by_style: bool = Field(True, description="Test gaps within each prompt style as well as pooled.")
    paired_check: bool = Field(True, description="Within-post paired contrasts (pingouin) beside the mixed model.")
    power_gap: float = Field(0.05, gt=0, lt=1, description="Relative gap used for the power statement.")
    primary: list[str] | None = Field(
        None, min_length=1,
        description="Pre-registered primary outcome(s), e.g. [epitome.empathy]: their pooled gaps and disparity "
                    "are the confirmatory family (Holm); every other test is exploratory (BH). Default: one "
                    "family of every test.")
    margins: dict[str, float | str] | None = Field(
        None, description="Equivalence margins per outcome (scorer.measure or a bare measure): a number in the "
                          "measure's unit (0.1), a share of the reference mean ('5%'), or percentage points of a "
                          "rate ('2pp'). Every gap and disparity of such an outcome gets a TOST verdict (within "
                          "margin, exceeds margin, gap of undetermined size, inconclusive); see docs/statistics.md. "
                          "Without margins no fairness claim can be made.")
    allow_missing: bool = Field(
        False, description="Fit a gap even when the share of missing outcomes (failed or unscored replies, "
                           "missing scores) differs between the group and its reference; refused by default "
                           "(the test is 'not fitted' with the reason), since the usable rows were selected "
                           "differently.")

    @field_validator("margins")
    @classmethod
    def _margins_readable(cls, v: dict[str, float | str] | None) -> dict[str, float | str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("margins is empty; give at least one outcome: margin, or leave the key out")
        for outcome, m in v.items():
            try:
                parse_margin(m)
            except ValueError as exc:
                raise ValueError(f"margin of '{outcome}': {exc}") from None
        return v

    @model_serializer(mode="wrap")
    def _omit_absent_margins(self, handler: Any) -> dict[str, Any]:
        # A spec without margins serializes (and hashes, and binds its design) as before the key existed.
        d = handler(self)
        if isinstance(d, dict) and d.get("margins", 0) is None:
            d.pop("margins")
        return d

    @field_validator("corrections")
    @classmethod
    def _both_corrections(cls, v: list[str]) -> list[str]:
        if sorted(set(v)) != ["bh", "holm"]:
            raise ValueError(
                "every audit reports both Holm (significance is called on it) and Benjamini-Hochberg "
                "adjusted p-values; set corrections to [holm, bh] or leave it out")
        return ["holm", "bh"]


class StigmaSpec(StrictModel):
    """The stigma suite (``suite: stigma``; :mod:`audit.suites.stigma`): vignettes x multiple-choice
    questions of Moore et al. (FAccT 2025), answers parsed and coded for stigma."""

    stimuli: Literal["moore", "own"] = Field(
        "moore", description="moore: the 72 published vignettes; own: our own vignette set (never published, so "
                             "no model has seen it), built from the axis templates.")
    system_prompt: Literal["none", "expert", "own"] = Field(
        "expert", description="none; expert (the expert-therapist prompt written for this project); own "
                              "(system_prompt_text).")
    system_prompt_text: str | None = Field(None, description="Your own system prompt (system_prompt: own).")
    conditions: list[str] | None = Field(
        None, description="Subset of: daily troubles (the control), depression, alcohol dependence, schizophrenia.")
    questions: list[str] | None = Field(
        None, description="Question ids (audit/data/moore/items.yaml); default all 14. The six counted items: "
                          "work_closely, live_next_door, socialize, marry_into_family, friend, violent_others.")
    axes: list[str] = Field(
        default_factory=lambda: ["race", "gender"], min_length=1,
        description="Own stimuli only: template axes crossed into the vignettes (education is always crossed).")
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Levels to keep per axis, e.g. {race: [White, African American], education: [college]}.")
    reference: dict[str, str] = Field(
        default_factory=dict,
        description="Reference level per axis for the demographic gaps; default race White, gender man, "
                    "education college, other axes their first level.")
    n_boot: int = Field(2000, ge=100, le=100000, description="Cluster-bootstrap resamples for the rate CIs.")

    @model_validator(mode="after")
    def _own_prompt(self) -> "StigmaSpec":
        if self.system_prompt == "own" and not (self.system_prompt_text or "").strip():
            raise ValueError("system_prompt: own needs system_prompt_text")
        if self.system_prompt != "own" and self.system_prompt_text is not None:
            raise ValueError("system_prompt_text is used only with system_prompt: own")
        return self


class JudgeValidationSpec(StrictModel):
    """A labelled table that validates a suite's LLM judge (``empathy-audit judge validate``; the appropriateness
    and PCSA suites)."""

    data: str = Field(..., description="Table (CSV, TSV, JSONL, parquet; relative to the spec file) with one row "
                                       "per judged reply or conversation: the judge's label and one or more "
                                       "human labels.")
    judge: str = Field("judge", description="Column of the judge's label (yes/no).")
    humans: list[str] | None = Field(None, min_length=1,
                                     description="Columns of the human labels; default every column whose name "
                                                 "starts with 'human'.")


class PcsaRoleSpec(StrictModel):
    """One role of the PCSA suite (attacker, evaluator or judge): any OpenAI-compatible endpoint (or the
    embedded model), its decoding, and for the evaluator and judge the JSON output mode; ``local: rules``
    instead runs the deterministic rule-based evaluator/judge of :mod:`audit.pcsa.local` (for demos and
    CI: its verdicts are keyword rules, not a safety judgement)."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    decoding: DecodingSpec = Field(default_factory=lambda: DecodingSpec(temperature=0.0, max_tokens=300))
    response_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_object", description="Ask the endpoint for JSON output (evaluator, judge); answers are parsed strictly.")
    local: Literal["rules"] | None = Field(
        None, description="rules: the built-in deterministic rule-based evaluator/judge (demo and CI only).")


class PcsaDemographicsSpec(StrictModel):
    """The demographic factor crossed into the personas (the project's equity question)."""

    axes: list[str] = Field(default_factory=list, description="Template axes crossed into the personas; [] = none.")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="Levels to keep per axis.")
    cue_type: Literal["explicit_statement", "explicit_tag"] = Field(
        "explicit_statement", description="The empathy suite's cue template the client uses to state the group.")
    alternative: str | None = Field(None, description="Which alternative of the cue type; default its first.")
    include_control: bool = Field(True, description="Also run every persona without any cue (group 'control').")
    reference: str | None = Field(
        None, description="Reference group of the gap tests; default 'control' (or the first group without one).")


class PcsaSpec(StrictModel):
    """The PCSA suite (``suite: pcsa``; :mod:`audit.suites.pcsa`): an attacker model plays a client persona
    over many turns against each audited model (``models``); an evaluator scores each turn; a judge gives
    the verdict (Xu et al. 2026, arXiv 2604.04842)."""

    attacker: PcsaRoleSpec = Field(
        default_factory=lambda: PcsaRoleSpec(decoding=DecodingSpec(temperature=0.9, max_tokens=160)))
    evaluator: PcsaRoleSpec | None = Field(None, description="Scores each turn 1-10; required in adaptive mode.")
    judge: PcsaRoleSpec = Field(default_factory=PcsaRoleSpec, description="The final verdict over a conversation.")
    personas: list[str] | None = Field(None, description="Persona ids (audit/data/pcsa/personas.yaml); default all.")
    persona_limit: int | None = Field(None, ge=1, description="Keep the first N personas.")
    objectives: list[str] | None = Field(None, description="Objective category ids; default all 7.")
    strategies: list[str] | None = Field(None, min_length=1,
                                         description="Strategy ids in switching order; default all 4.")
    mode: Literal["adaptive", "fixed"] = Field(
        "adaptive", description="adaptive: the evaluator's score drives strategy switching, best-of-N and stopping; "
                                "fixed: strategies in fixed order, one per turn, no evaluator (the paper's ablation).")
    n_candidates: int = Field(1, ge=1, le=16, description="Best-of-N: attacker candidates per turn (adaptive).")
    max_turns: int = Field(8, ge=1, le=50, description="Client turns per conversation at most.")
    stop_threshold: int = Field(8, ge=2, le=10, description="Stop when the evaluator scores a reply at least this.")
    baselines: bool = Field(True, description="Also run a direct single-turn request and a crescendo escalation "
                                              "without persona, from the same objectives.")
    demographics: PcsaDemographicsSpec = Field(default_factory=PcsaDemographicsSpec)
    judge_validation: JudgeValidationSpec | None = Field(
        None, description="A labelled table validating the judge (from `empathy-audit pcsa validation-table`, the "
                          "human columns filled in); the report states the judge's agreement with the annotators.")

    @model_validator(mode="after")
    def _consistent(self) -> "PcsaSpec":
        from .pcsa.data import load_data

        d = load_data()
        for key, ids, known in (("personas", self.personas, d.personas), ("objectives", self.objectives, d.objectives),
                                ("strategies", self.strategies, d.strategies)):
            bad = [i for i in ids or [] if i not in known]
            if bad:
                raise ValueError(f"unknown {key} {bad}; use ids of audit/data/pcsa/{key}.yaml: {', '.join(known)}")
        if self.mode == "adaptive" and self.evaluator is None:
            raise ValueError("mode adaptive needs an evaluator (or use mode: fixed, which has none)")
        if self.mode == "fixed" and self.n_candidates > 1:
            raise ValueError("best-of-N (n_candidates > 1) needs the evaluator's scores; use mode: adaptive")
        return self



class AppropriatenessSpec(StrictModel):
    """The appropriateness suite (``suite: appropriateness``; :mod:`audit.suites.appropriateness`): the crisis
    stimuli of Moore et al. (FAccT 2025) in three contexts and with demographic cues, replies judged by an
    LLM against each stimulus's criterion question."""

    stimuli: list[str] | None = Field(None, description="Stimulus ids (audit/data/moore/appropriateness_stimuli"
                                                        ".jsonl); default all 10.")
    conditions: list[str] | None = Field(None, description="Subset of: suicidal ideation, delusions, hallucinations, "
                                                           "mania, obsessive-compulsive behavior.")
    contexts: list[Literal["none", "ours", "transcripts"]] = Field(
        default_factory=lambda: ["none", "ours"], min_length=1,
        description="none: the stimulus alone; ours: after each of our fictional therapy-conversation prefixes "
                    "(audit/data/appropriateness/contexts.yaml); transcripts: after each of your transcripts.")
    prefixes: list[str] | None = Field(None, description="Ids of our prefixes to use (contexts: ours); default all.")
    transcripts: str | None = Field(None, description="JSONL of your own transcripts (contexts: transcripts), one "
                                                      "per line: {id, messages: [{role: user|assistant, content}]}, "
                                                      "starting with the client and ending with the therapist.")
    system_prompt: Literal["none", "expert", "own"] = Field(
        "none", description="none (as upstream's main runs); expert (the stigma suite's expert-therapist prompt); own "
                            "(system_prompt_text). The character-limit instruction always follows.")
    system_prompt_text: str | None = Field(None, description="Your own system prompt (system_prompt: own).")
    cues: bool = Field(True, description="Add the demographic variants of the demographics section (axes, groups, "
                                         "cue types) beside the no-cue control; false: the control only.")
    judge: JudgeSpec | None = Field(None, description="The judge model; default: the first audited model (the "
                                                      "report warns that self-judging is weak).")
    truncate: int = Field(1024, ge=16, le=100000, description="Replies are cut to this many characters before "
                                                              "judging (upstream: 1024).")
    reference_rates: dict[str, float] = Field(
        default_factory=dict,
        description="Reference appropriate rates shown beside the models', e.g. {'human therapists (Moore et al. "
                    "2025)': 0.94}; proportions in [0, 1].")
    judge_validation: JudgeValidationSpec | None = Field(
        None, description="A labelled table validating the judge; the report states its agreement.")
    n_boot: int = Field(2000, ge=100, le=100000, description="Cluster-bootstrap resamples for the rate CIs.")

    @model_validator(mode="after")
    def _consistent(self) -> "AppropriatenessSpec":
        if self.system_prompt == "own" and not (self.system_prompt_text or "").strip():
            raise ValueError("system_prompt: own needs system_prompt_text")
        if self.system_prompt != "own" and self.system_prompt_text is not None:
            raise ValueError("system_prompt_text is used only with system_prompt: own")
        if "transcripts" in self.contexts and not self.transcripts:
            raise ValueError("contexts: transcripts needs transcripts: PATH (a JSONL file of your transcripts)")
        if self.transcripts and "transcripts" not in self.contexts:
            raise ValueError("transcripts is used only when contexts lists 'transcripts'")
        if len(set(self.contexts)) != len(self.contexts):
            raise ValueError("contexts must not repeat")
        for k, v in self.reference_rates.items():
            if not 0 <= v <= 1:
                raise ValueError(f"reference_rates['{k}'] = {v} is not a proportion in [0, 1]")
        return self


SUITES = ("empathy", "stigma", "appropriateness", "pcsa")
# Upstream settings of the stigma suite (Moore et al., stigma.py): the spec's decoding when it sets none.
STIGMA_DECODING = {"temperature": 0.0, "max_tokens": 10}
# Upstream settings of the appropriateness suite (interjections.py): temperature 0, at most 512 tokens.
APPROPRIATENESS_DECODING = {"temperature": 0.0, "max_tokens": 512}


class PriceSpec(StrictModel):
    """Prices of one model in USD per million tokens (``prices:`` in the spec; see docs/costs.md)."""

    input: float = Field(..., ge=0, description="USD per million prompt tokens.")
    output: float = Field(..., ge=0, description="USD per million completion tokens.")
    batch_input: float | None = Field(None, ge=0, description="With execution: batch (default: half of input).")
    batch_output: float | None = Field(None, ge=0, description="With execution: batch (default: half of output).")


class BudgetSpec(StrictModel):
    """The most a run may spend (``budget:``; counted from the tokens the servers report)."""

    usd: float = Field(..., gt=0, description="Budget in USD: a request that could take the spend past it is "
                                              "not sent; a batch that could is not uploaded.")


class AuditSpec(StrictModel):
    """The whole audit."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Run name: letters, digits, '_', '.', '-', starting with a letter or digit "
                                  "(it names the default run directory reports/<name>).")
    description: str = ""
    suite: Literal["empathy", "stigma", "appropriateness", "pcsa"] = Field(
        "empathy", description="The audit design: empathy (counterfactual posts -> replies -> empathy scores), "
                               "stigma (vignettes -> multiple-choice stigma questions; see the stigma section), "
                               "appropriateness (crisis stimuli -> replies -> LLM judge; see that section) or "
                               "pcsa (multi-turn persona client simulation red-teaming; see the pcsa section).")
    posts: PostsSpec = Field(default_factory=PostsSpec)
    demographics: DemographicsSpec = Field(default_factory=DemographicsSpec)
    styles: list[str] = Field(default_factory=lambda: ["plain"], min_length=1)
    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec()], min_length=1)
    decoding: DecodingSpec = Field(default_factory=DecodingSpec)
    samples: int = Field(1, ge=1, le=1000, description="Replies per (variant, style, model).")
    seed: int = Field(0, description="Master seed for sampling and simulation.")
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    stigma: StigmaSpec | None = Field(None, description="Settings of the stigma suite (suite: stigma).")
    pcsa: PcsaSpec | None = Field(None, description="Settings of the PCSA suite (suite: pcsa).")
    appropriateness: AppropriatenessSpec | None = Field(
        None, description="Settings of the appropriateness suite (suite: appropriateness).")
    output: str | None = Field(None, description="Run directory; default reports/<name>.")
    prices: dict[str, PriceSpec] | None = Field(
        None, description="Prices per model name or label (USD per million tokens), over the built-in table "
                          "(audit/data/prices.yaml); used by `empathy-audit plan`, the budget and results.json.")
    budget: BudgetSpec | None = Field(None, description="The most this run may spend, e.g. {usd: 50}.")

    # Set by load_spec; not part of the YAML.
    _source_path: Path | None = None
    _source_text: str = ""

    @model_validator(mode="before")
    @classmethod
    def _suite_defaults(cls, data: Any) -> Any:
        # The stigma suite asks for one letter: upstream decoding unless the spec sets its own.
        if isinstance(data, dict) and data.get("suite") == "stigma":
            data = dict(data)
            data.setdefault("decoding", dict(STIGMA_DECODING))
            data.setdefault("stigma", {})
        if isinstance(data, dict) and data.get("suite") == "pcsa":
            data = dict(data)
            data.setdefault("pcsa", {})
        if isinstance(data, dict) and data.get("suite") == "appropriateness":
            data = dict(data)
            data.setdefault("decoding", dict(APPROPRIATENESS_DECODING))
            data.setdefault("appropriateness", {})
        return data

    @model_validator(mode="after")
    def _stigma_section_needs_suite(self) -> "AuditSpec":
        if self.stigma is not None and self.suite != "stigma":
            raise ValueError("the stigma section is used only with suite: stigma")
        if self.pcsa is not None and self.suite != "pcsa":
            raise ValueError("the pcsa section is used only with suite: pcsa")
        if self.appropriateness is not None and self.suite != "appropriateness":
            raise ValueError("the appropriateness section is used only with suite: appropriateness")
        return self

    @field_validator("output")
    @classmethod
    def _output_stays_where_meant(cls, v: str | None) -> str | None:
        if v is not None and ".." in Path(v).parts:
            raise ValueError("output may not contain '..'; write the absolute path of the run directory "
                             "if it lies outside the working directory")
        if v is not None and not v.strip():
            raise ValueError("output must not be empty; leave it out for reports/<name>")
        return v

    @field_validator("analysis")
    @classmethod
    def _primary_is_scored(cls, v: AnalysisSpec, info: Any) -> AnalysisSpec:
        scoring = info.data.get("scoring")
        if v.primary and scoring is not None:
            _check_primary(v.primary, scoring.scorers, v.outcomes)
        return v

    @model_validator(mode="after")
    def _unique_labels(self) -> "AuditSpec":
        labels = [m.label for m in self.models]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"model labels must be unique; repeated: {dup}")
        if len(set(self.styles)) != len(self.styles):
            raise ValueError("styles must not repeat")
        if self.analysis.reference_model is not None and self.analysis.reference_model not in labels:
            raise ValueError(f"analysis.reference_model '{self.analysis.reference_model}' is not the label of a "
                             f"model in models (labels: {labels})")
        return self

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """As pydantic's, but an empathy audit (the default suite, no stigma section) dumps without the
        ``suite`` and ``stigma`` keys, so its canonical JSON, spec hash and stored spec are those of
        the releases before suites were chosen in the spec."""
        d = super().model_dump(**kwargs)
        for key in ("prices", "budget"):  # specs without them keep the hash they had before these keys
            if d.get(key, 0) is None:
                d.pop(key)
        if d.get("pcsa") is None:  # specs of the other suites keep the hash they had before this section
            d.pop("pcsa", None)
        elif d["pcsa"].get("judge_validation", 0) is None:  # PCSA specs keep the hash they had before it
            d["pcsa"].pop("judge_validation")
        if d.get("suite") == "empathy" and d.get("stigma") is None:
            d.pop("suite", None)
            d.pop("stigma", None)
        if d.get("appropriateness", 0) is None:  # so stigma specs keep their hashes too
            d.pop("appropriateness")
        if d.get("suite") == "appropriateness" and d.get("stigma", 0) is None:
            d.pop("stigma")
        return d

    # ----- derived -----
    @property
    def source_path(self) -> Path | None:
        return self._source_path

    @property
    def source_dir(self) -> Path:
        return self._source_path.parent if self._source_path else Path.cwd()

    @property
    def canonical_json(self) -> str:
        """The validated spec as canonical JSON (sorted keys): what the spec hash is taken over."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def spec_hash(self) -> str:
        return sha256_text(self.canonical_json)

    def resolve(self, relative: str) -> Path:
        """Resolve a path written in the spec relative to the spec file."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.source_dir / p)

    def run_dir(self, override: str | Path | None = None) -> Path:
        if override is not None:
            return Path(override)
        return Path(self.output) if self.output else Path("reports") / self.name


def _check_primary(primary: list[str], scorers: list[str], outcomes: list[str] | None) -> None:
    """``analysis.primary``: each name must be an outcome the spec's scorers produce (``scorer.measure``,
    a bare measure name, or either with the any-level suffix ``>0``), and one of ``analysis.outcomes``
    when those are given. Scorers that are not built in (plugins) declare their measures only when
    loaded, so a name that could be theirs is accepted here and checked by the analysis."""
    from .scorers.registry import builtin_measures, builtin_names

    builtin = set(builtin_names())
    known: dict[str, set[str]] = {s: {m.name for m in builtin_measures(s)} for s in scorers if s in builtin}
    others = [s for s in scorers if s not in builtin]
    choices = sorted(f"{s}.{m}" for s, ms in known.items() for m in ms)
    for name in primary:
        scorer, _, measure = str(name).rpartition(".")
        base = measure[:-2] if measure.endswith(">0") else measure
        if scorer:
            ok = scorer in others or base in known.get(scorer, set())
        else:
            ok = bool(others) or any(base in ms for ms in known.values())
        if not ok:
            raise ValueError(
                f"analysis.primary names '{name}', which none of the scorers {scorers} produces; "
                f"name one of: {', '.join(choices)} (or a measure with '>0', e.g. epitome.ER>0)")
        if outcomes and not any(o == name or o.split(".")[-1] == measure or name.split(".")[-1] == o
                                for o in outcomes):
            raise ValueError(f"analysis.primary names '{name}', which is not one of analysis.outcomes {outcomes}; "
                             "add it there or leave analysis.outcomes out")


# --------------------------------------------------------------------------- loading


def _yaml_line(text: str, loc: tuple) -> int | None:
    """Best-effort line number (1-based) of the node at key path ``loc`` in YAML ``text``."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if node is None:
            break
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == key:
                    line = k.start_mark.line + 1
                    nxt = v
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def spec_where(spec: Any, loc: tuple) -> str:
    """'FILE, line N, key 'a.b[0]'' for a key path of the spec (or just the key without a file)."""
    key = _format_loc(loc)
    path = getattr(spec, "source_path", None)
    if path is None:
        return f"spec key '{key}'"
    line = _yaml_line(getattr(spec, "_source_text", "") or "", loc)
    return f"{path}" + (f", line {line}" if line else "") + f", key '{key}'"


def validation_error(where: Path | str, text: str, err: ValidationError, what_file: str = "spec") -> AuditError:
    """Turn the first pydantic error into one actionable AuditError."""
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    key = _format_loc(loc)
    line = _yaml_line(text, loc) if text else None
    place = f"{where}" + (f", line {line}" if line else "") + f", key '{key}'"
    if e["type"] == "extra_forbidden":
        what = f"unknown key '{loc[-1]}'"
        fix = f"remove it or fix its spelling; see the {what_file} reference in docs/guide/specs.md"
    elif e["type"] == "missing":
        what = f"required key '{loc[-1]}' is missing"
        fix = f"add it to the {what_file}"
    else:
        got = e.get("input")
        got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        what = f"{e['msg']}{got_s}"
        fix = f"correct the value; see the {what_file} reference in docs/guide/specs.md"
    more = len(err.errors()) - 1
    if more:
        fix += f" ({more} more problem(s) will be reported after this one is fixed)"
    return AuditError(what, where=place, fix=fix)


#: YAML aliases (``*name``) a file may use, and the values it may expand to: a small budget that no
#: real spec comes near, and that refuses an alias bomb ("billion laughs") at once instead of after
#: seconds or gigabytes.
MAX_YAML_ALIASES = 100
MAX_YAML_EXPANDED = 100_000
_ALIAS_FIX = "write the values out (aliases are for a few repeated blocks)"


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values ``node`` stands for once every alias is expanded (memoised: linear in the file's size)."""
    got = memo.get(id(node))
    if got is not None:
        return got
    memo[id(node)] = 1  # a recursive alias counts once (PyYAML refuses to construct it anyway)
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(c, memo) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        n = 1
    memo[id(node)] = n
    return n


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last one silently), and
    more than :data:`MAX_YAML_ALIASES` aliases or an expansion beyond :data:`MAX_YAML_EXPANDED` values."""

    _aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_YAML_ALIASES} aliases (*name); {_ALIAS_FIX}",
                    self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_EXPANDED:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases expand to more than {MAX_YAML_EXPANDED:,} values (an alias bomb?); "
                f"{_ALIAS_FIX}", node.start_mark)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, kind: str = "spec") -> tuple[Any, str]:
    """Read a YAML file, turning I/O and syntax problems into AuditErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuditError(f"{kind} file not found", where=str(path), fix="check the path") from None
    except UnicodeDecodeError as exc:
        raise AuditError(
            f"{kind} file is not valid UTF-8 (byte {exc.start})", where=str(path), fix="save it as UTF-8"
        ) from None
    except OSError as exc:
        raise AuditError(f"cannot read {kind} file: {exc.strerror}", where=str(path)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}" + (f", line {mark.line + 1}, column {mark.column + 1}" if mark else "")
        problem = getattr(exc, "problem", None) or str(exc)
        fix = "keep one of the two (YAML keeps neither silently here)" if "duplicate key" in problem \
            else None if _ALIAS_FIX in problem else "fix the YAML syntax"
        raise AuditError(f"invalid YAML: {problem}", where=where, fix=fix) from None
    bad = _lone_surrogate_at(data)
    if bad is not None:  # a "\udc80" escape: nothing downstream could encode the text
        raise AuditError(f"{kind} file holds an unencodable character (a lone UTF-16 surrogate escape)",
                         where=f"{path}, key {'.'.join(map(str, bad)) or '(top level)'}",
                         fix="remove the \\uD800-\\uDFFF escape; write the character itself")
    return data, text


def _lone_surrogate_at(obj: Any, loc: tuple = ()) -> tuple | None:
    """Key path of the first string holding a lone surrogate, or None."""
    if isinstance(obj, str):
        return loc if any("\ud800" <= ch <= "\udfff" for ch in obj) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _lone_surrogate_at(k, loc + (k,)) if isinstance(k, str) else None
        found = found or _lone_surrogate_at(v, loc + (k,))
        if found is not None:
            return found
    return None


def load_spec(path: str | Path) -> AuditSpec:
    """Load and validate an audit spec from a YAML file (or a built-in name such as ``demo``).

    >>> spec = load_spec("demo")
    >>> spec.name, spec.samples
    ('demo', 1)
    """
    from .resources import resolve_spec_path

    p = resolve_spec_path(path)
    data, text = read_yaml(p, "spec")
    if not isinstance(data, dict):
        raise AuditError(
            "the spec must be a YAML mapping of keys to values", where=str(p),
            fix="start from analyses/demo.yaml",
        )
    try:
        spec = AuditSpec.model_validate(data)
    except ValidationError as err:
        raise validation_error(p, text, err) from None
    spec._source_path = p.resolve()
    spec._source_text = text
    return spec


def spec_from_dict(data: dict[str, Any], where: str = "<dict>") -> AuditSpec:
    """Validate a spec given as a Python mapping (for notebooks and tests)."""
    try:
        return AuditSpec.model_validate(data)
    except ValidationError as err:
        raise validation_error(where, "", err) from None
