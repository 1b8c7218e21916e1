"""The five ECS calls the reconciler makes, answered in this process from a few dicts.

Enough to run a pass and see which calls it makes (tests/test_policies.py) and
to run `make reconcile`'s tool (tests/test_reconcile_tool.py): one page per list,
no throttling. tools/fake_ecs.py (branch fake-ecs) serves ECS's wire protocol to
a real botocore client; this stands in for it until it is merged.
"""
import itertools
from typing import Any, Dict, List

ACCOUNT, REGION = "111122223333", "us-east-1"


class EcsStub:
    def __init__(self) -> None:
        self.tasks: Dict[str, Dict[str, Dict[str, Any]]] = {}  # cluster ARN -> task ARN -> task
        self.instances: Dict[str, Dict[str, Dict[str, Any]]] = {}  # cluster ARN -> instance ARN -> instance
        self.calls: List[str] = []  # operation names, in order
        self._ids = itertools.count(1)

    def add_cluster(self, name: str) -> str:
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}"
        self.tasks[arn], self.instances[arn] = {}, {}
        return arn

    def add_task(self, cluster: str, last_status: str = "RUNNING", version: int = 1) -> str:
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster.rsplit('/', 1)[-1]}/{next(self._ids):032x}"
        desired = "STOPPED" if last_status in ("STOPPING", "STOPPED") else "RUNNING"
        self.tasks[cluster][arn] = {
            "taskArn": arn, "clusterArn": cluster, "lastStatus": last_status, "desiredStatus": desired,
            "launchType": "FARGATE", "createdAt": 1795000000.125, "version": version, "containers": [],
        }
        return arn

    def add_container_instance(self, cluster: str, status: str = "ACTIVE", version: int = 1) -> str:
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster.rsplit('/', 1)[-1]}/{next(self._ids):032x}"
        self.instances[cluster][arn] = {
            "containerInstanceArn": arn, "ec2InstanceId": "i-0123456789abcdef0", "status": status,
            "agentConnected": True, "version": version, "registeredAt": 1795000000.5,
        }
        return arn

    # -- the ECS client's methods ---------------------------------------------------

    def list_clusters(self, **params: Any) -> Dict[str, Any]:
        self.calls.append("ListClusters")
        return {"clusterArns": sorted(self.tasks)}

    def list_tasks(self, cluster: str, desiredStatus: str, **params: Any) -> Dict[str, Any]:
        self.calls.append("ListTasks")
        return {"taskArns": [arn for arn, task in self.tasks[cluster].items() if task["desiredStatus"] == desiredStatus]}

    def describe_tasks(self, cluster: str, tasks: List[str], **params: Any) -> Dict[str, Any]:
        self.calls.append("DescribeTasks")
        return self._described("tasks", self.tasks.get(cluster, {}), tasks)

    def list_container_instances(self, cluster: str, **params: Any) -> Dict[str, Any]:
        self.calls.append("ListContainerInstances")
        return {"containerInstanceArns": sorted(self.instances[cluster])}

    def describe_container_instances(self, cluster: str, containerInstances: List[str], **params: Any) -> Dict[str, Any]:
        self.calls.append("DescribeContainerInstances")
        return self._described("containerInstances", self.instances.get(cluster, {}), containerInstances)

    @staticmethod
    def _described(member: str, known: Dict[str, Dict[str, Any]], arns: List[str]) -> Dict[str, Any]:
        return {
            member: [known[arn] for arn in arns if arn in known],
            "failures": [{"arn": arn, "reason": "MISSING"} for arn in arns if arn not in known],
        }
