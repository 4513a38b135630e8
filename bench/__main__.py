"""``python -m bench [--smoke] [--only chat,idle,...]``: run the scenarios, print a table
for each, write ``bench/results/<scenario>.json`` and regenerate ``docs/benchmarks.md``.

``--smoke`` runs every scenario at a tiny size into a scratch directory and leaves the
committed results alone: CI runs it so that the benchmarks keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import resource
import sys
import tempfile
from pathlib import Path

from bench import machine, report

HERE = Path(__file__).resolve().parent
SCENARIOS = report.ORDER


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, scratch output")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "WORKSESSION_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server to create scratch databases on",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("WORKSESSION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--results", type=Path, help="where the JSON files go")
    parser.add_argument("--docs", type=Path, help="the Markdown report to regenerate")
    return parser.parse_args()


async def _main(args: argparse.Namespace) -> int:
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenarios: {', '.join(unknown)}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="worksession-bench-"))
    results = args.results or (scratch / "results" if args.smoke else HERE / "results")
    committed_docs = HERE.parent / "docs" / "benchmarks.md"
    docs = args.docs or (scratch / "benchmarks.md" if args.smoke else committed_docs)
    described = machine.describe(args.postgres, args.redis)
    print(
        f"{described['cores']} x {described['cpu_model']}, load average "
        f"{described['load_average'][0]:.2f}; logs in {scratch}"
    )
    failed = []
    for name in wanted:
        log_dir = scratch / name
        log_dir.mkdir()
        context = report.Context(args.postgres, args.redis, log_dir, args.smoke, described)
        module = importlib.import_module(f"bench.scenarios.{name}")
        try:
            scenario: report.Scenario = await module.run(context)
        except Exception as exc:
            failed.append(name)
            print(f"\n{name} failed: {type(exc).__name__}: {exc} (logs in {log_dir})")
            continue
        report.print_scenario(scenario)
        report.write_json(scenario, results, described)
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(report.render_markdown(report.load_results(results)))
    print(f"\nresults in {results}, report in {docs}")
    return 1 if failed else 0


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(asyncio.run(_main(_arguments())))


main()
