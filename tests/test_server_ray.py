"""The server on Ray Serve: the same app in each replica, deployed on the tests' one Ray cluster
(``ray_session``: 2 CPUs) with Serve's proxy on a free port of 127.0.0.1.

One deployment, changed in place: one MiniLM replica (parity, key, health), scaled to two (both
answer concurrent requests, with the vectors of one), then a model that cannot load. The command
line's own checks run without Ray. Left to tests/test_server.py, to keep this module near a minute
and a half on two cores: the instruction sides on the tiny QZhou checkpoint (a replica runs that
same app; a third model here costs ~20 s) and a subprocess of ``qzhou-plugins serve --ray`` (its
own local Ray cluster costs ~40 s; what it adds over :func:`deploy` is signal handling).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.server import ServerSettings, add_server_arguments, serve_from_arguments
from servers import free_port

KEY = "ray-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MIN_COSINE = 0.99999
QUESTIONS = ["what causes rain?", "how do vaccines train the immune system?"]
PASSAGES = [
    "Rain forms when water vapour condenses into droplets heavy enough to fall.",
    "Vaccines expose the immune system to a harmless piece of a pathogen.\nMemory cells remain.",
    "The stock market fell sharply on Monday.",
]


def rows(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    data = sorted(answer.json()["data"], key=lambda item: item["index"])
    return np.array([item["embedding"] for item in data], dtype=np.float32)


def assert_same_vectors(served: np.ndarray, local: np.ndarray) -> None:
    assert served.shape == local.shape
    cosines = np.sum(served * local, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(local, axis=1)
    )
    assert cosines.min() >= MIN_COSINE, cosines


@pytest.fixture(scope="module")
def serve(ray_session: None) -> Iterator[Any]:
    """Ray Serve on the session's cluster, shut down when the module ends (its proxy, its port)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is part of the 'ray' extra")
    from ray import serve

    try:
        yield serve
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def settings(serve: Any) -> ServerSettings:
    return ServerSettings(model=DEMO_MODEL, port=free_port(), api_key=KEY)


@pytest.fixture(scope="module")
def one_replica(settings: ServerSettings) -> str:
    from qzhou_plugins.server.ray_serve import deploy

    return deploy(settings, 1)


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder(model=DEMO_MODEL)


def test_one_replica_serves_the_in_process_vectors(one_replica: str, minilm: Encoder) -> None:
    answer = httpx.post(f"{one_replica}/v1/embeddings", json={"input": PASSAGES}, headers=AUTH, timeout=60)
    assert_same_vectors(rows(answer), minilm.encode_documents(PASSAGES))
    assert answer.json()["model"] == DEMO_MODEL
    query = {"input": QUESTIONS, "model": DEMO_MODEL + "-query"}
    answer = httpx.post(f"{one_replica}/v1/embeddings", json=query, headers=AUTH, timeout=60)
    assert_same_vectors(rows(answer), minilm.encode_queries(QUESTIONS))
    assert answer.headers["x-qzhou-replica"]


def test_the_key_is_checked_in_the_replica_and_health_is_open(one_replica: str) -> None:
    refused = httpx.post(f"{one_replica}/v1/embeddings", json={"input": "x"}, timeout=60)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.get(f"{one_replica}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=60)
    assert wrong.status_code == 401
    health = httpx.get(f"{one_replica}/health", timeout=60)
    assert health.status_code == 200 and health.json() == {"status": "ok", "model": DEMO_MODEL}


@pytest.fixture(scope="module")
def two_replicas(one_replica: str, settings: ServerSettings) -> str:
    from qzhou_plugins.server.ray_serve import deploy

    assert deploy(settings, 2) == one_replica  # scaled in place, same proxy
    return one_replica


def test_two_replicas_share_concurrent_requests_and_answer_alike(two_replicas: str, minilm: Encoder) -> None:
    texts = [f"{passage} (copy {i})" for i in range(8) for passage in PASSAGES]
    expected = minilm.encode_documents(texts)
    requests = [list(range(start, start + 1 + start % 3)) for start in range(len(texts) - 3)]

    def send(indices: list[int]) -> tuple[list[int], np.ndarray, str]:
        body = {"input": [texts[i] for i in indices]}
        answer = httpx.post(f"{two_replicas}/v1/embeddings", json=body, headers=AUTH, timeout=120)
        return indices, rows(answer), answer.headers["x-qzhou-replica"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(send, requests * 2))
    for indices, vectors, _ in answers:
        assert_same_vectors(vectors, expected[indices])
    replicas = {replica for _, _, replica in answers}
    assert len(replicas) == 2, f"one replica answered all {len(answers)} requests: {replicas}"


def test_a_model_that_cannot_load_fails_the_deployment_with_its_reason(
    two_replicas: str, settings: ServerSettings, tmp_path: Any, serve: Any
) -> None:
    from qzhou_plugins.server.ray_serve import APP_NAME, deploy

    missing = str(tmp_path / "no-such-model")
    with pytest.raises(RuntimeError, match=r"did not start: .*could not load '.*no-such-model'"):
        deploy(settings.model_copy(update={"model": missing}), 1)
    assert APP_NAME not in serve.status().applications  # not left behind, failed


# -- the command line and the checks made before Ray starts ----------------------------------------


def parse(*flags: str) -> argparse.Namespace:
    return add_server_arguments(argparse.ArgumentParser()).parse_args(list(flags))


def test_the_ray_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse("--ray").ray == "local" and parse("--ray=auto", "--replicas", "4").replicas == 4
    assert parse().ray is None and parse().replicas is None
    with pytest.raises(SystemExit):
        parse("--ray", "--replicas", "0")
    assert "must be a positive integer, not 0" in capsys.readouterr().err
    assert serve_from_arguments(parse("--replicas", "2")) == 2
    assert "--replicas needs --ray" in capsys.readouterr().err


def test_replica_resources_follow_the_cluster_not_this_machine() -> None:
    from qzhou_plugins.server.ray_serve import replica_resources

    settings = ServerSettings()
    assert replica_resources(settings, {"CPU": 16, "GPU": 4}, 4) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert replica_resources(settings, {"CPU": 2}, 2) == {"num_cpus": 1.0}
    assert replica_resources(settings, {"CPU": 2}, 3) == {"num_cpus": 0.667}
    on_cpu = settings.model_copy(update={"device": "cpu"})
    assert replica_resources(on_cpu, {"CPU": 8, "GPU": 2}, 2) == {"num_cpus": 1.0}
    with pytest.raises(ValueError, match="has no GPU"):
        replica_resources(settings.model_copy(update={"device": "cuda"}), {"CPU": 8}, 1)
    with pytest.raises(ValueError, match="each replica gets its own"):
        replica_resources(settings.model_copy(update={"device": "cuda:1"}), {"CPU": 8, "GPU": 2}, 1)


def test_a_local_cluster_is_checked_before_serve_waits_for_it() -> None:
    from qzhou_plugins.server.ray_serve import check_local_cluster

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = ServerSettings(port=taken.getsockname()[1])
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{busy.port}"):
            check_local_cluster(busy, {"CPU": 2}, 1)
    check_local_cluster(ServerSettings(port=free_port()), {"CPU": 2}, 2)  # fits: no error
    with pytest.raises(ValueError, match="--replicas 3 needs a GPU each, and this machine has 2"):
        check_local_cluster(ServerSettings(port=free_port()), {"CPU": 8, "GPU": 2}, 3)


def test_without_ray_serve_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from qzhou_plugins.server.ray_serve import import_serve

    monkeypatch.setitem(sys.modules, "ray.serve", None)  # what an install without Serve looks like
    with pytest.raises(ImportError, match=r"pip install 'qzhou-plugins\[ray\]'"):
        import_serve()
