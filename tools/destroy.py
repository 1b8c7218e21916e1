"""`make destroy STAGE=<stage>`: undo `make deploy`, keeping the tables unless asked.

Runs `chalice delete --stage <stage>` (functions, roles, rules), then
deletes the dead-letter queue, its alarm and the functions' log groups. The tables hold the recorded
state and may be the docs example's: they go only with --delete-tables
(`make destroy STAGE=dev DELETE_TABLES=yes`).
"""
import argparse
from typing import Any, List

from tools.deploy import StagePlan, cli, report, run_chalice, stage_plan


def tear_down(session: Any, plan: StagePlan, delete_tables: bool = False) -> List[str]:
    """Delete the queue, alarm and log groups (and the tables if asked); return what was deleted."""
    deleted: List[str] = []
    cloudwatch = session.client("cloudwatch")
    if cloudwatch.describe_alarms(AlarmNames=[plan.alarm_name])["MetricAlarms"]:
        cloudwatch.delete_alarms(AlarmNames=[plan.alarm_name])
        deleted.append(f"deleted alarm {plan.alarm_name}")
    sqs = session.client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        pass
    else:
        sqs.delete_queue(QueueUrl=url)
        deleted.append(f"deleted queue {plan.queue_name}")
    logs = session.client("logs")
    for name in plan.log_group_names:
        try:
            logs.delete_log_group(logGroupName=name)
        except logs.exceptions.ResourceNotFoundException:
            continue
        deleted.append(f"deleted log group {name}")
    if delete_tables:
        dynamodb = session.client("dynamodb")
        for name in plan.table_names.values():
            try:
                dynamodb.delete_table(TableName=name)
            except dynamodb.exceptions.ResourceNotFoundException:
                continue
            deleted.append(f"deleted table {name}")
    return deleted


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument("--delete-tables", action="store_true", help="also delete the stage's tables and their data")
    parser.add_argument(
        "--without-chalice-delete", action="store_true",
        help="the functions were deployed another way (terraform destroy removes them): skip chalice delete",
    )
    args = parser.parse_args(argv)
    import boto3

    plan = stage_plan(args.stage)
    if not args.without_chalice_delete:
        print(f"chalice delete --stage {plan.stage}")
        run_chalice("delete", "--stage", plan.stage)
    print("dead-letter queue, alarm, log groups" + (" and tables:" if args.delete_tables else " (tables kept):"))
    report(tear_down(boto3.session.Session(), plan, args.delete_tables))
    return 0


if __name__ == "__main__":
    cli(main)
