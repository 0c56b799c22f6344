"""``empathy-audit plan SPEC``: requests, tokens, cost and wall time before the first paid request."""

from __future__ import annotations

import argparse
import json

from ..cliargs import bounded_float, count, output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="what a run will send and cost: requests per model (and how many are already answered), "
                     "tokens, price, wall time",
        description="Print the cost plan of SPEC: per model the requests `run` sends and how many are already "
                    "answered in the run directory, prompt tokens (the model's tokenizer where one is available "
                    "offline, else an estimate of characters / 4), completion tokens (max_tokens, an upper bound, "
                    "or the mean of a pilot's replies), the cost from the price table (audit/data/prices.yaml, the "
                    "spec's prices:, or --price-in/--price-out; batch prices for execution: batch) and the wall time "
                    "at the spec's rate limits. Nothing is sent unless --pilot is given.")
    p.add_argument("spec", metavar="SPEC", help="audit spec (YAML file), or the name of a built-in audit")
    p.add_argument("--out", metavar="RUN_DIR", type=output_dir(), help="run directory (default: the spec's)")
    p.add_argument("--pilot", type=count(0, cap=10_000, what="pilot requests per model"), default=0, metavar="N",
                   help="first send N reply requests per online model (stored: the run reuses them) and plan the "
                        "completion tokens from their reported usage")
    price_options(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_plan)


def price_options(p: argparse.ArgumentParser, budget: bool = True) -> None:
    p.add_argument("--price-in", type=bounded_float(0, cap=10_000), metavar="USD", help="USD per million prompt tokens, for every model "
                   "(with --price-out; overrides the price table and the spec's prices)")
    p.add_argument("--price-out", type=bounded_float(0, cap=10_000), metavar="USD", help="USD per million completion tokens (with --price-in)")
    if budget:
        p.add_argument("--max-usd", type=bounded_float(0, lo_open=True), metavar="USD",
                       help="budget in USD (overrides the spec's budget: usd): a request that could take the spend "
                            "past it is not sent, a batch that could is not uploaded")


def _plan(args: argparse.Namespace) -> int:
    from ..costs import plan_costs
    from ..resources import resolve_spec_path
    from ..spec import load_spec

    spec = load_spec(resolve_spec_path(args.spec))
    plan = plan_costs(spec, args.out, pilot=args.pilot, price_in=args.price_in, price_out=args.price_out,
                      max_usd=args.max_usd, progress=not args.json)
    if args.json:
        print(json.dumps(plan.as_dict(), indent=1))
    else:
        print("\n".join(plan.lines()))
    return 0
