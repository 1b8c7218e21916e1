"""`make destroy STAGE=<stage>`: undo `make deploy`, keeping the tables unless asked.

Refuses to start while the dead-letter queue holds events (they would be lost
with it) unless --force. Then runs `chalice delete --stage <stage>`
(functions, roles, rules, schedule) and deletes the queue, its alarm, the
notification topic `make deploy NOTIFY=<e-mail>` made, and the functions' log
groups. The tables hold the recorded state: they go only with --delete-tables
(`make destroy STAGE=dev DELETE_TABLES=yes`), and only those ecs-state created
for this stage (tagged so); any other, such as the docs example's
ECSTaskState, is kept and named.
"""
import argparse
from typing import Any, List

from tools.deploy import notification_topic_name
from tools.stage import DEPLOYMENT_TAG, DeployError, StagePlan, cli, report, run_chalice, stage_plan

# Every message the queue holds: waiting, being read, and delayed.
QUEUE_COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")


def refuse_while_events_wait(session: Any, plan: StagePlan, force: bool = False) -> None:
    sqs = session.client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(QUEUE_COUNTS))["Attributes"]
    waiting = sum(int(counts.get(name, 0)) for name in QUEUE_COUNTS)
    if waiting and not force:
        raise DeployError(
            f"queue {plan.queue_name} holds {waiting} events ecs-state could not record: redrive them first "
            f"(docs/deploy.md, \"Redriving the dead-letter queue\"), or delete them with it: "
            f"make destroy STAGE={plan.stage} FORCE=1"
        )


def tear_down(session: Any, plan: StagePlan, delete_tables: bool = False, force: bool = False) -> List[str]:
    """Delete the queue, alarm, topic and log groups (and this stage's own tables if asked);
    return what was deleted, and which tables were kept and why."""
    refuse_while_events_wait(session, plan, force)
    deleted: List[str] = []
    cloudwatch = session.client("cloudwatch")
    if cloudwatch.describe_alarms(AlarmNames=[plan.alarm_name])["MetricAlarms"]:
        cloudwatch.delete_alarms(AlarmNames=[plan.alarm_name])
        deleted.append(f"deleted alarm {plan.alarm_name}")
    sns = session.client("sns")
    topic = notification_topic_name(plan)
    for page in sns.get_paginator("list_topics").paginate():
        for arn in (t["TopicArn"] for t in page["Topics"] if t["TopicArn"].rsplit(":", 1)[-1] == topic):
            sns.delete_topic(TopicArn=arn)
            deleted.append(f"deleted topic {topic}")
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
        deleted += delete_own_tables(session.client("dynamodb"), plan)
    return deleted


def delete_own_tables(dynamodb: Any, plan: StagePlan) -> List[str]:
    """Delete the stage's tables that ecs-state created for it; name the others, kept."""
    done = []
    for name in plan.table_names.values():
        try:
            arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
        except dynamodb.exceptions.ResourceNotFoundException:
            continue
        tags = {tag["Key"]: tag["Value"] for tag in dynamodb.list_tags_of_resource(ResourceArn=arn).get("Tags", [])}
        creator = tags.get(DEPLOYMENT_TAG)
        if creator == plan.deployment:
            dynamodb.delete_table(TableName=name)
            done.append(f"deleted table {name}")
        elif creator is None:
            done.append(f"kept table {name}: ecs-state did not create it (no {DEPLOYMENT_TAG} tag), "
                        "e.g. the docs example's; delete it yourself if its data may go")
        else:
            done.append(f"kept table {name}: ecs-state created it for {creator}, not for {plan.deployment}")
    return done


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument("--delete-tables", action="store_true",
                        help="also delete the stage's tables that ecs-state created, and their data")
    parser.add_argument("--force", action="store_true", help="delete the dead-letter queue even if events wait in it")
    parser.add_argument(
        "--without-chalice-delete", action="store_true",
        help="the functions were deployed another way (terraform destroy removes them): skip chalice delete",
    )
    args = parser.parse_args(argv)
    import boto3

    plan = stage_plan(args.stage)
    session = boto3.session.Session()
    refuse_while_events_wait(session, plan, args.force)  # before anything is deleted
    if not args.without_chalice_delete:
        print(f"chalice delete --stage {plan.stage}")
        run_chalice("delete", "--stage", plan.stage)
    print("dead-letter queue, alarm, log groups" + (" and tables:" if args.delete_tables else " (tables kept):"))
    report(tear_down(session, plan, args.delete_tables, args.force))
    return 0


if __name__ == "__main__":
    cli(main)
