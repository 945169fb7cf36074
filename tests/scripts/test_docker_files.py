"""docker-compose.yml, the Dockerfile and the image's start-up script (docker/stack.py), without Docker.

The compose file must run under `docker compose` (v2), `docker-compose` (v1) and `docker stack deploy`
(swarm ignores build, restart and depends_on, and restarts a finished task unless told not to), so its
structure is checked here; scripts/compose-e2e.sh and scripts/swarm-e2e.sh run it on a real engine.
docker/stack.py runs here for real: the `polchain` CLI writes and checks the spec, a real HTTP server
stands in for a peer and for the node's API.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the dev extra) parses docker-compose.yml")

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
GPU = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())
SWARM = yaml.safe_load((REPO / "docker-compose.swarm.yml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
NODES = [name for name in COMPOSE["services"] if name.startswith("node")]


@pytest.fixture(scope="module")
def stack():
    spec = importlib.util.spec_from_file_location("docker_stack", REPO / "docker" / "stack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- docker-compose.yml ---------------------------------------------------------------------------
def test_no_version_key():
    for doc in (COMPOSE, GPU, SWARM):
        assert "version" not in doc, "the version key is obsolete in compose v2 and not needed by v1.27+ or swarm"


def test_three_nodes_and_a_one_shot_dataset_service():
    assert NODES == ["node0", "node1", "node2"]
    assert set(COMPOSE["services"]) == {"dataset", *NODES}


def test_every_service_has_init_and_a_restart_policy_for_compose_and_for_swarm():
    for name, svc in COMPOSE["services"].items():
        assert svc.get("init") is True, f"{name}: init: true (SIGTERM reaches polchain; down does not wait 10 s)"
        assert "restart" in svc, f"{name}: no restart: for compose"
        policy = svc.get("deploy", {}).get("restart_policy", {})
        assert policy.get("condition") in ("none", "on-failure", "any"), f"{name}: no deploy.restart_policy for swarm"
    for name in NODES:
        svc = COMPOSE["services"][name]
        assert svc["restart"] == "unless-stopped" and svc["deploy"]["restart_policy"]["condition"] == "any"


def test_the_one_shot_service_does_not_restart_after_it_succeeded():
    svc = COMPOSE["services"]["dataset"]
    assert svc["restart"] == "no"
    policy = svc["deploy"]["restart_policy"]
    # swarm's default condition is `any`: a task that exited 0 would be started again, forever
    assert policy["condition"] in ("none", "on-failure")
    if policy["condition"] == "on-failure":
        assert int(policy["max_attempts"]) >= 1, "retries of a failing setup are bounded"


def test_start_up_order_does_not_rest_on_depends_on_conditions():
    for name in NODES:
        svc = COMPOSE["services"][name]
        # the long form (condition: service_completed_successfully) is not in swarm's schema and swarm
        # ignores depends_on anyway: the nodes wait for the dataset service's spec themselves
        assert isinstance(svc.get("depends_on", []), list), f"{name}: depends_on in its short (list) form"
        assert svc["entrypoint"] == ["polchain-stack", "node"]
        assert svc["healthcheck"]["test"] == ["CMD", "polchain-stack", "health"]
    assert COMPOSE["services"]["dataset"]["entrypoint"] == ["polchain-stack", "setup"]


def test_every_service_names_a_prebuilt_image_for_swarm():
    for name, svc in COMPOSE["services"].items():
        assert svc["image"] == "${POLCHAIN_IMAGE:-polchain:latest}", f"{name}: swarm runs images, it builds none"


def test_local_spec_archive_and_k_reach_the_dataset_service():
    svc = COMPOSE["services"]["dataset"]
    vols = svc["volumes"]
    assert "${POLCHAIN_SPEC:-/dev/null}:/input/spec.json:ro" in vols
    assert "${POLCHAIN_DATASET_ARCHIVE:-/dev/null}:/input/dataset.tar.gz:ro" in vols
    assert "datasets:/data/datasets" in vols
    assert svc["environment"]["POLCHAIN_K"] == "${POLCHAIN_K:-}"
    assert svc["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    for name in NODES:   # the spec decides; a preset next to it would be a second opinion
        assert "POLCHAIN_PRESET" not in COMPOSE["services"][name]["environment"]
        assert "datasets:/data/datasets" in COMPOSE["services"][name]["volumes"]


def test_gpu_override_keeps_the_restart_policy_shape():
    for name in ("node0", "node1"):
        assert GPU["services"][name]["environment"]["POLCHAIN_DEVICE"] == "cuda"
        assert "restart_policy" not in GPU["services"][name].get("deploy", {})   # merged from the base file


# -- Dockerfile and build context ------------------------------------------------------------------
def test_dockerfile_takes_torch_only_from_torch_index_url_when_set():
    assert "--extra-index-url" not in DOCKERFILE, "an extra index falls back to PyPI's CUDA torch silently"
    assert re.search(r'if \[ -n "\$TORCH_INDEX_URL" \]; then\s*\\\s*pip install --index-url "\$TORCH_INDEX_URL"',
                     DOCKERFILE)
    assert "error: could not install $TORCH_SPEC from TORCH_INDEX_URL" in DOCKERFILE
    assert "--find-links /tmp/wheels" in DOCKERFILE        # ./wheels/ (may be empty)
    assert "torch installed:" in DOCKERFILE and "CPU-only build" in DOCKERFILE


def test_build_context_stays_small_and_carries_the_start_up_script():
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "*" in ignore, "everything is left out of the context unless named"
    assert "!docker/stack.py" in ignore and "!wheels/*.whl" in ignore
    assert "COPY docker/stack.py /usr/local/bin/polchain-stack" in DOCKERFILE
    # the wheels COPY needs a source when ./wheels/ is missing: a file that never changes, so that
    # editing pyproject.toml keeps the torch layer cached
    assert "COPY LICENSE wheels* /tmp/wheels/" in DOCKERFILE and "!LICENSE" in ignore


# -- docker/stack.py --------------------------------------------------------------------------------
class _Server:
    """A real HTTP server on 127.0.0.1 answering every GET with (status, JSON body)."""

    def __init__(self, status: int, body: dict):
        outer = self
        self.paths: list[str] = []

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.paths.append(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _env(monkeypatch, tmp_path, **values):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # polchain
    monkeypatch.setenv("POLCHAIN_STACK_SPEC", str(tmp_path / "datasets" / "stack" / "spec.json"))
    monkeypatch.setenv("POLCHAIN_DATASET_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("STACK_INPUT_SPEC", os.devnull)
    monkeypatch.setenv("STACK_INPUT_ARCHIVE", os.devnull)
    for k in ("POLCHAIN_PRESET", "POLCHAIN_K"):
        monkeypatch.delenv(k, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "datasets").mkdir(exist_ok=True)


@pytest.mark.slow
def test_setup_writes_the_spec_with_a_cpu_sized_k(stack, monkeypatch, tmp_path, capsys):
    _env(monkeypatch, tmp_path, POLCHAIN_PRESET="tiny", POLCHAIN_K="3")
    assert stack.setup() == 0
    out = tmp_path / "datasets" / "stack" / "spec.json"
    spec = json.loads(out.read_text())
    assert spec["name"] == "tiny-k3" and spec["difficulty"]["initial"] == 3
    assert not out.with_name("spec.json.part").exists()
    assert "ready:" in capsys.readouterr().err


@pytest.mark.slow
def test_setup_takes_a_given_spec_file(stack, monkeypatch, tmp_path):
    given = tmp_path / "my-spec.json"
    from consensus.spec import preset
    given.write_text(preset("tiny").with_difficulty(2).to_json())
    _env(monkeypatch, tmp_path, STACK_INPUT_SPEC=str(given))
    assert stack.setup() == 0
    assert json.loads((tmp_path / "datasets" / "stack" / "spec.json").read_text()) == json.loads(given.read_text())


@pytest.mark.parametrize("values, message", [
    ({"POLCHAIN_K": "four"}, "POLCHAIN_K='four' is not a whole number"),
    ({"POLCHAIN_K": "4", "STACK_INPUT_SPEC": "SPEC"}, "POLCHAIN_K and POLCHAIN_SPEC both set"),
])
def test_setup_refuses_bad_input_in_one_line_and_writes_no_spec(stack, monkeypatch, tmp_path, capsys, values,
                                                               message):
    spec_file = tmp_path / "s.json"
    spec_file.write_text("{}")
    _env(monkeypatch, tmp_path, **{k: (str(spec_file) if v == "SPEC" else v) for k, v in values.items()})
    assert stack.setup() == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "datasets" / "stack" / "spec.json").exists()


def test_setup_with_a_broken_spec_file_fails_and_nodes_keep_waiting(stack, monkeypatch, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "tiny", "difficulty"')
    _env(monkeypatch, tmp_path, STACK_INPUT_SPEC=str(broken))
    assert stack.setup() == 2
    assert "did not check out" in capsys.readouterr().err
    assert not list((tmp_path / "datasets" / "stack").iterdir())


def test_dev_null_and_empty_files_are_not_given(stack, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    assert not stack.given(Path(os.devnull)) and not stack.given(empty) and not stack.given(tmp_path / "none")
    empty.write_text("x")
    assert stack.given(empty)


def test_node_waits_for_the_stack_spec_then_takes_it(stack, tmp_path):
    spec_path = tmp_path / "stack" / "spec.json"
    spec_path.parent.mkdir()
    timer = threading.Timer(0.5, spec_path.write_text, args=("{}",))
    timer.start()
    try:
        assert stack.wait_for_spec(spec_path, tmp_path / "node", [], wait_s=120, poll_s=0.1) == spec_path
    finally:
        timer.cancel()


def test_node_without_a_local_setup_takes_the_spec_from_a_peer(stack, tmp_path):
    from consensus.spec import preset
    spec = preset("tiny").to_dict()
    dead = _Server(200, {})
    dead.close()                       # a peer that does not answer comes first
    peer = _Server(200, spec)
    try:
        got = stack.wait_for_spec(tmp_path / "never" / "spec.json", tmp_path / "node", [dead.url, peer.url + "/"],
                                  wait_s=120, poll_s=0.1)
    finally:
        peer.close()
    assert got == tmp_path / "node" / "peer-spec.json"
    assert json.loads(got.read_text()) == spec and peer.paths == ["/spec"]


def test_node_gives_up_after_its_wait(stack, tmp_path):
    assert stack.wait_for_spec(tmp_path / "spec.json", tmp_path / "node", [], wait_s=0.3, poll_s=0.1) is None


@pytest.mark.parametrize("status, body, healthy", [
    (200, {"status": "ok", "height": 3}, True),
    (503, {"status": "syncing"}, True),                      # alive: swarm must not kill a long sync
    (503, {"status": "store-error", "detail": "disk full"}, False),
])
def test_health(stack, monkeypatch, tmp_path, status, body, healthy):
    _marks(stack, monkeypatch, tmp_path)
    srv = _Server(status, body)
    monkeypatch.setenv("POLCHAIN_PORT", str(srv.httpd.server_port))
    try:
        assert stack.health() == (0 if healthy else 1)
    finally:
        srv.close()
    assert srv.paths == ["/health"]


def _marks(stack, monkeypatch, tmp_path):
    for name in ("WAITING_MARK", "STARTED_MARK", "ANSWERED_MARK"):
        monkeypatch.setattr(stack, name, tmp_path / name.lower())


def test_health_while_waiting_and_starting_and_without_an_api(stack, monkeypatch, tmp_path):
    _marks(stack, monkeypatch, tmp_path)
    srv = _Server(200, {"status": "ok"})
    port = srv.httpd.server_port
    srv.close()
    monkeypatch.setenv("POLCHAIN_PORT", str(port))
    monkeypatch.setenv("POLCHAIN_STACK_START_GRACE", "600")
    assert stack.health() == 1                     # not waiting, never started: no API is a failure
    stack.WAITING_MARK.write_text("1")
    assert stack.health() == 0                     # waiting for the spec
    stack.WAITING_MARK.unlink()
    stack.STARTED_MARK.write_text("1")
    assert stack.health() == 0                     # `polchain node` started, API not up yet: within the grace
    os.utime(stack.STARTED_MARK, (0, 0))
    assert stack.health() == 1                     # ... but not forever
    os.utime(stack.STARTED_MARK, None)
    stack.ANSWERED_MARK.touch()
    assert stack.health() == 1                     # once the API has answered, silence is a failure at once


def test_swarm_needs_no_ipvs_load_balancer():
    """Published ports go straight to each node's host (no routing mesh) and a service name resolves to
    its task (no virtual IP): both need IPVS, which engines in containers and some kernels lack, and a
    node is one replica, so there is nothing to balance."""
    for name in NODES:
        svc = COMPOSE["services"][name]
        # in the swarm file that `docker stack deploy` merges on top: docker-compose v1 warned about the key
        # once per node on every command (issue 31.12)
        assert SWARM["services"][name] == {"deploy": {"endpoint_mode": "dnsrr"}}
        assert "endpoint_mode" not in svc["deploy"]
        (port,) = svc["ports"]
        assert port["mode"] == "host" and port["target"] == 8000
        assert port["published"] == f"${{{name.upper()}_PORT:-800{name[-1]}}}"


# -- issue 31.12: compose nits --------------------------------------------------------------------------
def _docs_with_commands() -> dict[str, str]:
    return {p: (REPO / p).read_text() for p in ("README.md", "docs/testnet.md", "docker-compose.yml",
                                                  "scripts/swarm-e2e.sh")}


def test_every_stack_deploy_names_the_swarm_file():
    """`docker stack deploy -c docker-compose.yml` alone would run the nodes behind IPVS virtual IPs."""
    for path, text in _docs_with_commands().items():
        flat = re.sub(r"\\\n\s*|\n\s*", " ", text)
        for m in re.finditer(r"docker stack deploy [^`#\n]*?-c docker-compose\.yml(?P<rest>[^`#]{0,60})", flat):
            assert "-c docker-compose.swarm.yml" in m.group("rest"), (path, m.group(0))


def test_compose_and_readme_agree_on_the_tiny_block_time():
    compose = (REPO / "docker-compose.yml").read_text()
    readme = (REPO / "README.md").read_text()
    assert "~2 s" not in compose and "~10 s" in compose and "every ~10 s" in readme.replace("\n", " ")
    assert "~2 s blocks" not in (REPO / "docs/testnet.md").read_text()


def test_compose_says_it_publishes_on_every_interface():
    compose = (REPO / "docker-compose.yml").read_text()
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "0.0.0.0:8000-8002" in compose and "127.0.0.1 only" in compose
    assert "0.0.0.0:8000-8002" in readme and "listens on 127.0.0.1 only" in readme


FAKE_DOCKER = """#!/usr/bin/env bash
case "$1" in
  build)
    echo '#1 [internal] load build definition from Dockerfile'
    echo '#5 [build 1/3] FROM docker.io/library/python:3.11-slim'
    echo '#5 0.123 noise that is not a step'
    echo 'Step 2/9 : RUN pip install torch'
    echo 'torch installed: 2.13.0+cpu: CPU-only build'
    exit "${FAKE_BUILD_RC:-0}";;
  image) echo 12345;;
esac
"""


@pytest.mark.parametrize("rc", [0, 1])
def test_build_script_says_what_it_does(tmp_path, rc):
    """scripts/docker-build-image.sh was silent for the 5 minutes of a cold build: it says so up front and
    names each build step as it starts (a fake `docker` on PATH; the script runs in a copy of scripts/)."""
    import shutil
    import subprocess
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "docker-build-image.sh", tmp_path / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TORCH_SPEC": "torch==2.13.0",
           "FAKE_BUILD_RC": str(rc)}
    r = subprocess.run(["bash", str(tmp_path / "scripts" / "docker-build-image.sh"), "polchain:test"], env=env,
                       capture_output=True, text=True, timeout=60)
    err = r.stderr
    assert "about 5 minutes the first time" in err
    assert "[docker-build-image]   #5 [build 1/3] FROM docker.io/library/python:3.11-slim" in err
    assert "[docker-build-image]   Step 2/9 : RUN pip install torch" in err
    assert "noise that is not a step" not in err.split("last 30 lines")[0] or rc
    if rc == 0:
        assert r.returncode == 0, err
        assert "[docker-build-image] torch installed: 2.13.0+cpu" in err and "built polchain:test (12345 bytes)" in err
    else:
        assert r.returncode == 1 and "FAIL: docker build" in err and "noise that is not a step" in err
