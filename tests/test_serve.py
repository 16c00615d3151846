"""`aunet serve`: transformers' own OpenAI-compatible server on an HF export, started on
loopback and asked with the `openai` client (a real HTTP client), streaming and not; greedy
completions equal `aunet generate --temperature 0`."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from aunet.config import load_config
from greedy import agreed_length
from helpers import REPO_ROOT, free_port, venv_script
from model_helpers import export_random_model

# Slow tier: a server process per test, 11 s in all (2-core machine, 2026-12-05).
pytestmark = pytest.mark.slow

MAX_BYTES = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import httpx

    root = tmp_path_factory.mktemp("serve")
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml")
    export_random_model(root / "export", cfg, seed=3)
    proc = subprocess.run([venv_script("aunet"), "export", "--model", str(root / "export"), "--out", str(root / "hf"),
                           "--format", "hf"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    port = free_port()
    log = open(root / "serve.log", "w")
    server = subprocess.Popen([venv_script("aunet"), "serve", str(root / "hf"), "--device", "cpu", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (root / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /health in 180 s"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield root, url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def greedy(export, prompt: str) -> str:
    """What `aunet generate --temperature 0` writes after the prompt."""
    proc = subprocess.run([venv_script("aunet"), "generate", "--model", str(export), "--prompt", prompt,
                           "--max-bytes", str(MAX_BYTES), "--temperature", "0"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.removesuffix("\n")
    assert out.startswith(prompt)
    # The server runs the hf model in another process: its bytes equal these only if no step of
    # this greedy path is a near tie of the top two logits (tests/greedy.py), checked here.
    from aunet.inference.export import load_model
    from aunet.inference.generate import Generator

    model, cfg = load_model(export)
    gen = Generator(model, cfg.data.regex.strategy)
    path = gen.generate([prompt.encode()], MAX_BYTES, temperature=0)[0]
    assert agreed_length(gen, prompt.encode(), path) == len(path), "a near tie on this greedy path: pick another prompt"
    return out[len(prompt):]


def test_completions_are_aunet_generates_greedy_bytes_streaming_or_not(server):
    from openai import OpenAI

    root, url = server
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    model = str(root / "hf")
    want = greedy(root / "export", "The cat")
    assert want  # twelve bytes, decoded as aunet generate decodes them
    whole = client.completions.create(model=model, prompt="The cat", max_tokens=MAX_BYTES, temperature=0)
    assert whole.choices[0].text == want
    chunks = client.completions.create(model=model, prompt="The cat", max_tokens=MAX_BYTES, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want


def test_chat_completions_use_the_byte_level_template(server):
    from openai import OpenAI

    root, url = server
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    model = str(root / "hf")
    messages = [{"role": "user", "content": "Hello there"}]
    # The exported chat template: "role: content" blocks, then the assistant's turn.
    want = greedy(root / "export", "user: Hello there\n\nassistant:")
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_BYTES, temperature=0)
    assert whole.choices[0].message.content == want
    chunks = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_BYTES, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
