"""Whatever a caller sends, the API answers 200, 400 or 404: never 500.

Hypothesis drives random strings, unicode, huge values and forged tokens
through every route of the local app (chalice.test.Client), on DynamoDB Local,
so that what DynamoDB itself would refuse is found too. Each case below was a
500 before the parameters were checked against ECS's formats and DynamoDB's
key limits (see test_the_inputs_that_answered_500).
"""
import base64
import json
import os
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.apps import client_for, load_app
from tests.helpers import ACCOUNT, task_event

CLUSTER = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/test-cluster"
EXAMPLES = int(os.environ.get("ECS_STATE_FUZZ_EXAMPLES", "150"))
ALLOWED = {200, 400, 404}


@pytest.fixture(scope="module")
def local_app():
    return load_app(events_route=True)


@pytest.fixture
def http(dynamodb_local, local_app):
    client = client_for(local_app).http
    for number in range(3):
        event = task_event(1, task_id=f"{number:032x}")
        client.post("/events", headers={"Content-Type": "application/json"}, body=json.dumps(event).encode())
    return client


def token(value) -> str:
    """A `next` token as the API encodes one, around any JSON value."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "\u2603", "1", "/", "%", ":"]), st.integers(0, 5000)),
)
digits = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["²", "١٢", "٣", "⁵", "0x10", "1e2", " 5", "5 ", "+5", "9" * 5000, "00050", "１０"]),
)
arn_like = st.one_of(
    st.just(CLUSTER),
    st.builds(lambda name: f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{name}", texts),
    st.builds(lambda region: f"arn:aws:ecs:{region}:{ACCOUNT}:cluster/c", texts),
    st.builds(lambda account: f"arn:aws:ecs:us-east-1:{account}:cluster/c", st.sampled_from(["١٢٣٤٥٦٧٨٩٠١٢", "1" * 12, "1" * 13])),
    texts,
)
forged_tokens = st.one_of(
    texts,
    st.builds(lambda depth: token("[" * depth), st.integers(1, 100_000)),
    st.builds(lambda depth: base64.urlsafe_b64encode(b"[" * depth).decode(), st.integers(1, 100_000)),
    st.builds(token, st.recursive(st.none() | st.integers() | st.text(max_size=20),
                                   lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                                   max_leaves=10)),
    st.builds(
        lambda key, phase, cluster: token({"taskArn": key, "clusterArn": cluster, "cw_phase": phase}),
        texts, st.sampled_from(["open", "finished", "", "x" * 2000]), arn_like,
    ),
)
list_params = st.fixed_dictionaries(
    {},
    optional={"cluster": arn_like, "status": texts, "limit": digits, "next": forged_tokens, "bogus": texts},
)
ids = st.one_of(texts, st.builds(lambda name: f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/test-cluster/{name}", texts))


def query(params) -> str:
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params.items())


def answered(response) -> int:
    assert response.status_code in ALLOWED, (response.status_code, response.body[:300])
    if response.status_code == 400:
        message = json.loads(response.body)["Message"]
        assert ": " in message  # "<parameter>: <problem>"
    return response.status_code


fuzz = hypothesis_settings(
    max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@fuzz
@given(path=st.sampled_from(["/tasks", "/container-instances"]), params=list_params)
def test_listings_answer_200_or_400(http, path, params):
    answered(http.get(f"{path}?{query(params)}" if params else path))


@fuzz
@given(path=st.sampled_from(["/tasks", "/container-instances"]), ident=ids,
       params=st.fixed_dictionaries({}, optional={"cluster": arn_like, "other": texts}))
def test_gets_answer_200_400_or_404(http, path, ident, params):
    url = f"{path}/{quote(ident, safe='')}" + (f"?{query(params)}" if params else "")
    answered(http.get(url))


@fuzz
@given(body=st.one_of(st.binary(max_size=200), texts.map(str.encode),
                      st.builds(lambda v: json.dumps({**task_event(1), "detail": v}).encode(),
                                st.dictionaries(texts, texts, max_size=4))))
def test_posted_events_answer_200_or_400(http, body):
    assert answered(http.post("/events", headers={"Content-Type": "application/json"}, body=body)) in (200, 400)


@pytest.mark.parametrize(
    "url",
    [
        f"/tasks?cluster={quote(CLUSTER, safe='')}&limit=%C2%B2",  # "²": str.isdigit took it, int() did not
        # JSON nested past Python's recursion limit:
        f"/tasks?cluster={quote(CLUSTER, safe='')}&next={base64.urlsafe_b64encode(b'[' * 100_000).decode()}",
        # a region of any length made keys past DynamoDB's 2,048 bytes:
        f"/tasks?cluster={quote(f'arn:aws:ecs:{chr(120) * 3000}:{ACCOUNT}:cluster/c', safe='')}",
        f"/tasks/{quote('arn:aws:ecs:' + 'r' * 3000 + ':' + ACCOUNT + ':task/c/x', safe='')}",
    ],
)
def test_the_inputs_that_answered_500(http, url):
    response = http.get(url)
    assert response.status_code == 400, response.body[:300]
