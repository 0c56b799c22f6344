"""``empathy-audit batch status|submit|poll|collect|cancel|run-local RUN_DIR``: the batch steps of
models with ``execution: batch`` (:mod:`audit.batch`), one at a time (``run`` does them all)."""

from __future__ import annotations

import argparse

from ..cliargs import bounded_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="batch execution: status, submit, poll, collect, cancel, run-local",
        description="The steps of batch execution (models with execution: batch in the spec), each safe to repeat: "
                    "'empathy-audit run' does submit, poll and collect by itself. State lives in the run store; "
                    "the batch files are kept under RUN_DIR/batches/.")
    bsub = p.add_subparsers(dest="batch_command", metavar="STEP", required=True)
    for name, help_ in (("status", "the run's batches, their counts and the estimated saving"),
                        ("submit", "write and submit batch files of the pending requests"),
                        ("poll", "refresh the provider status of submitted batches (safe from cron)"),
                        ("collect", "store the output of finished batches (or of --from files)"),
                        ("cancel", "cancel open batches (their finished part is still collected)"),
                        ("run-local", "send the pending batch files through the online client to any endpoint "
                                      "and collect the output")):
        q = bsub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        q.add_argument("run_dir", metavar="RUN_DIR", help="run directory (contains store.sqlite)")
        if name == "status":
            q.add_argument("--price-in", type=bounded_float(0, cap=10_000), metavar="USD",
                           help="synchronous price per 1M prompt tokens")
            q.add_argument("--price-out", type=bounded_float(0, cap=10_000), metavar="USD",
                           help="synchronous price per 1M completion tokens")
        if name == "collect":
            q.add_argument("--from", dest="files", nargs="+", metavar="OUT.jsonl",
                           help="provider-format output files (vllm run-batch -o, run-local) to collect instead")
        if name == "cancel":
            q.add_argument("--batch", dest="batch_ids", nargs="+", metavar="BATCH_ID", help="only these batches")
        if name == "run-local":
            q.add_argument("--base-url", metavar="URL",
                           help="endpoint to send to (a vLLM or llama.cpp server); default: each model's own base_url")
        q.set_defaults(func=_handler(name))


def _handler(step: str):
    def run(args: argparse.Namespace) -> int:
        from .. import batch

        if step == "status":
            return _status(args)
        if step == "submit":
            c = batch.submit(args.run_dir)
            print(f"submitted {c.submitted_requests} requests in {c.submitted_batches} batches"
                  + (f"; {c.prepared_batches} batch files written" if c.prepared_batches else "")
                  + (f"; {c.found_again} batches an interrupted earlier submit had created were found again "
                     "(not created twice)" if c.found_again else ""))
        elif step == "poll":
            c = batch.poll(args.run_dir)
            print(f"polled {c.polled} batches")
            _status(args, short=True)
        elif step == "collect":
            c = batch.collect(args.run_dir, files=args.files)
            print(f"collected {c.collected_batches} batches: " + _counts(c.stored))
        elif step == "cancel":
            n = batch.cancel(args.run_dir, args.batch_ids)
            print(f"cancelled {n} batches; run 'empathy-audit batch collect {args.run_dir}' for their finished part")
        elif step == "run-local":
            c = batch.run_local(args.run_dir, base_url=args.base_url, echo=print)
            print(f"ran {c.collected_batches} batch files: " + _counts(c.stored))
        return 0

    return run


def _counts(stored: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(stored.items())) or "nothing new"


def _status(args: argparse.Namespace, short: bool = False) -> int:
    from ..batch import status_rows
    from ..store import RunStore

    with RunStore(args.run_dir, create=False) as st:
        rows = status_rows(st)
    if not rows:
        print("no batches in this run")
        return 0
    if not short:
        print(f"{'batch':<32} {'model':<12} {'provider':<8} {'state':<10} {'provider status':<16} "
              f"{'requests':>8}  collected")
        for r in rows:
            col = ", ".join(f"{k} {v}" for k, v in sorted(r["collected"].items()))
            print(f"{r['batch_id']:<32} {r['model']:<12} {r['provider']:<8} {r['state']:<10} "
                  f"{r['provider_status']:<16} {r['requests']:>8}  {col}")
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + int(r["requests"])
    print("requests by state: " + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())))
    if short:
        return 0
    pin = sum(r["prompt_tokens"] for r in rows if r["provider"] != "local")
    pout = sum(r["completion_tokens"] for r in rows if r["provider"] != "local")
    line = (f"tokens answered through provider batches: {pin} prompt + {pout} completion; batch pricing is 50% "
            "of the synchronous price, so the saving is half of what these tokens would cost online")
    if args.price_in is not None and args.price_out is not None:
        sync = pin / 1e6 * args.price_in + pout / 1e6 * args.price_out
        line += f": about ${sync / 2:,.2f} saved of ${sync:,.2f}"
    print(line)
    return 0
