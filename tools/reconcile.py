"""`make reconcile STAGE=<stage>`: one reconcile pass from this machine, as the scheduled function runs it.

The same code (chalicelib/reconcile/passes.py) with the stage's settings (its
environment_variables in .chalice/config.json, read through Chalice's config
loading as `make deploy` reads them) and your AWS credentials and region. It
says first which account, region and tables it works on, then prints the
pass's summary, and exits non-zero if the pass failed or did not finish (out
of --budget-seconds). Your credentials need what the reconcile function's
policy grants (.chalice/policy-<stage>-reconcile.json).
"""
import argparse
import json
import os
import sys
import time
from typing import List

from chalicelib.errors import ReconcileFailed
from chalicelib.runtime import Runtime
from tools.deploy import scheduled_event
from tools.stage import aws_caller, cli, stage_plan


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument("--budget-seconds", type=float, metavar="SECONDS",
                        help="stop before the next ECS call after this long, and report the pass incomplete "
                        "(default: no limit)")
    args = parser.parse_args(argv)
    if args.budget_seconds is not None and args.budget_seconds <= 0:
        parser.error("--budget-seconds must be above 0")

    plan = stage_plan(args.stage)
    # EMF metrics mean nothing off Lambda (Powertools reads its own variable).
    os.environ.update(plan.environment)  # as its function has them: boto3's and Powertools' variables too
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    process = Runtime(plan.config)  # the stage's settings, as its function reads them
    session, identity = aws_caller()
    print(f"reconcile pass, stage {plan.stage}: account {identity['Account']} as {identity['Arn']}, "
          f"region {session.region_name}, tables {', '.join(plan.table_names.values())}", flush=True)

    event = scheduled_event(identity["Account"], session.region_name, time.time())
    try:
        summary = process.reconcile(event, None, budget_seconds=args.budget_seconds)
    except ReconcileFailed as failed:
        summary = failed.summary
    print(json.dumps(summary, indent=2, default=str))
    if summary["errors"]:
        print(f"error: the pass failed: {'; '.join(summary['errors'])}", file=sys.stderr)
        return 1
    if not summary["complete"]:
        print("error: the pass did not finish within its budget: run again, or give it more --budget-seconds",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli(main)
