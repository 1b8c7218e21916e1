"""`make local` end to end: a real `chalice local --stage local` on loopback, driven over HTTP."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from urllib.parse import quote, urlencode

import pytest

from tests.helpers import ACCOUNT
from tests.test_api import BATCH_EC2, WEB_PROD, expected_keys
from tools import local_api
from tools.local_dynamodb import LOOPBACK, ROOT, free_port, stop_process
from tools.replay import expected_state, recent_events

BANNER = re.compile(r"ecs-state local API: (http://127\.0\.0\.1:\d+)  \(chalice local PID (\d+)\)")
STARTUP_SECONDS = 90


def call(url, data=None):
    """(status, JSON body) of one request; urllib sends a body form-encoded, as `curl --data` does."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for_banner(process, log_path):
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        match = BANNER.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1), int(match.group(2))
        if process.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"make local did not start:\n{log_path.read_text(errors='replace')[-3000:]}")


def is_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("dynamodb", [pytest.param("dynamodb_local", marks=pytest.mark.dynamodb_local), "embedded"])
def test_make_local_records_posted_events_and_serves_them_back(request, tmp_path, dynamodb):
    """The wrapper on DynamoDB Local, or on its embedded DynamoDB (on a free port, not the stage's 8000)."""
    if dynamodb == "dynamodb_local":
        where = ["--dynamodb-endpoint", request.getfixturevalue("dynamodb_local_endpoint")]
    else:
        where = ["--dynamodb-port", "0"]
    log_path = tmp_path / "make-local.log"
    samples = tmp_path / "local-events"  # each run its own: another may run at once (make test-moved-clock)
    with open(log_path, "wb") as log:
        wrapper = subprocess.Popen(
            [sys.executable, "-m", "tools.local_api", "--port", str(free_port()), *where, "--sample-events", str(samples)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # As a shell starts a background job (`make local &`, a CI runner): SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    chalice_pid = None
    try:
        url, chalice_pid = wait_for_banner(wrapper, log_path)
        outcomes = Counter()
        for path in sorted(samples.glob("*.json")):  # dated yesterday by make local
            status, results = call(f"{url}/events", data=path.read_bytes())
            assert status == 200, results
            assert len(results) == len(json.loads(path.read_text()))
            outcomes.update(result["outcome"] for result in results)
        assert outcomes["created"] == len(expected_state(recent_events())), outcomes

        status, page = call(f"{url}/tasks?{urlencode({'cluster': WEB_PROD})}")
        assert status == 200, page
        listed = {item["taskArn"] for item in page["items"]}
        assert listed == expected_keys("task", WEB_PROD), (page, log_path.read_text(errors="replace")[-3000:])
        latest = expected_state(recent_events())
        for item in page["items"]:
            status, stored = call(f"{url}/tasks/{quote(item['taskArn'], safe='')}")
            assert status == 200
            assert stored["version"] == latest[("task", item["taskArn"])]["detail"]["version"]
        (instance,) = expected_keys("container_instance", BATCH_EC2)
        status, stored = call(f"{url}/container-instances/{instance.rsplit('/', 1)[-1]}?{urlencode({'cluster': BATCH_EC2})}")
        assert status == 200 and stored["containerInstanceArn"] == instance

        status, refused = call(f"{url}/events", data=b'{"source": "aws.ecs"}')
        assert status == 400 and refused["Message"].startswith("detail-type: must be")
        status, missing = call(f"{url}/tasks/{'0' * 32}?{urlencode({'cluster': f'arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/x'})}")
        assert status == 404

        os.kill(wrapper.pid, signal.SIGINT)  # Ctrl-C, to the wrapper's PID only
        try:
            code = wrapper.wait(timeout=30)  # its stop is bounded: chalice gets 10 s, then is killed
        except subprocess.TimeoutExpired:
            pytest.fail(f"the wrapper did not stop within 30 s of Ctrl-C; chalice local "
                        f"{'still runs' if is_running(chalice_pid) else 'had stopped'}; its log ends:\n"
                        + log_path.read_text(errors="replace")[-2000:])
        assert code == 0
        assert not is_running(chalice_pid)
    finally:
        stop_process(wrapper)
        if chalice_pid is not None and is_running(chalice_pid):
            os.kill(chalice_pid, signal.SIGTERM)  # only if the wrapper failed to stop its child


def test_the_local_stage_points_at_a_loopback_dynamodb_and_enables_post_events():
    config = json.loads(local_api.CONFIG.read_text())
    environment = local_api.stage_environment(config)
    assert local_api.loopback_port(environment[local_api.ENDPOINT_VARIABLE]) > 0
    assert environment["ECS_STATE_EVENTS_ROUTE"] == "enabled"
    for stage in ("dev", "prod"):
        assert "ECS_STATE_EVENTS_ROUTE" not in local_api.stage_environment(config, stage)
    # No table names: the fixtures' and the defaults apply.
    assert not {"TASK_TABLE_NAME", "CONTAINER_INSTANCE_TABLE_NAME"} & set(environment)


@pytest.mark.parametrize("endpoint", ["http://0.0.0.0:8000", "http://10.0.0.1:8000", "https://127.0.0.1:8000", "http://127.0.0.1"])
def test_only_loopback_endpoints_are_accepted(endpoint):
    with pytest.raises(SystemExit, match="must be http://127.0.0.1:<port>"):
        local_api.loopback_port(endpoint)


def test_the_temporary_project_changes_only_the_local_endpoint():
    config = json.loads(local_api.CONFIG.read_text())
    with ExitStack() as stack:
        project = local_api.project_pointing_at(f"http://{LOOPBACK}:1234", config, stack)
        moved = json.loads((project / ".chalice" / "config.json").read_text())
        assert (project / "app.py").resolve() == ROOT / "app.py"
    assert not project.exists()
    assert moved["stages"]["local"]["environment_variables"].pop(local_api.ENDPOINT_VARIABLE) == f"http://{LOOPBACK}:1234"
    config["stages"]["local"]["environment_variables"].pop(local_api.ENDPOINT_VARIABLE)
    assert moved == config
