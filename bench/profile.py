"""`make bench-profile`: where the handler's time goes, per event, under cProfile.

Runs the benchmark's workload once through ecs-state's handler on DynamoDB
Local (high-water marks off by default, so every event makes its request) and
prints the functions with the most cumulative time. cProfile counts wall time,
so waiting for DynamoDB Local shows up under the socket calls.
"""
import argparse
import cProfile
import os
import pstats
import sys
from typing import List

from bench import workload as workloads
from bench.run import DEPLOYED_ENVIRONMENT, fresh_tables, handler_output_discarded
from bench.writers import prepare_ours
from tools.local_dynamodb import DynamoDBLocal, local_environment


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-profile ARGS=...", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks in the workload (100)")
    parser.add_argument("--marks", action="store_true", help="keep the high-water marks on")
    parser.add_argument("--top", type=int, default=40, help="functions to show (40)")
    parser.add_argument("--output", default=None, help="also write the raw stats (for snakeviz, pstats)")
    args = parser.parse_args(argv)
    os.environ.update(DEPLOYED_ENVIRONMENT)
    work = workloads.build(args.tasks, 0.3, seed=1)
    with handler_output_discarded() as report, DynamoDBLocal() as server:
        os.environ.update(local_environment(server.endpoint))
        from chalicelib import runtime

        client = runtime.current().dynamodb()
        prepare_ours(work, fresh_tables(client, "warm-up"), args.marks)(0)  # client, JIT, imports
        deliver = prepare_ours(work, fresh_tables(client, "profile"), args.marks)
        profile = cProfile.Profile()
        profile.enable()
        for index in range(len(work.deliveries)):
            deliver(index)
        profile.disable()
        print(f"{len(work.deliveries)} events; times are totals, divide by the events for per-event cost", file=report)
        pstats.Stats(profile, stream=report).sort_stats("cumulative").print_stats(args.top)
    if args.output:
        profile.dump_stats(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
