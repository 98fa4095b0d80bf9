"""`bentoml build` makes a Bento that carries the model and serves with no network.

    sudo-less root shell: python -m bench.bento_offline [--model PATH]

Steps, each timed: import the model into a fresh BentoML home A; ``bentoml build``; ``bentoml
export`` to a .bento archive; ``bentoml import`` into another fresh home B (which has no model
until the archive brings it); then, inside a new network namespace with only the loopback
interface up (``unshare --net``, needs root), ``bentoml serve`` the Bento from B, with the
working directory outside the repository, and send the 3-face frame to /analyze. Without
``unshare`` it falls back to serving with HTTP(S)_PROXY pointing at a dead local port.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.serving_common import REPO_ROOT, bentoml_server, import_into, machine_note, model_file, temp_home, three_face_frame

BENTOML = str(Path(sys.executable).parent / "bentoml")


def run(cmd: list[str], home: Path, **kwargs) -> str:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, **kwargs).stdout


def network_is_unreachable() -> str:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError as error:
        return f"no network (pypi.org:443 -> {error.__class__.__name__}: {error})"
    return "NETWORK REACHABLE"


def inner(home: Path, tag: str, frame_path: Path) -> None:
    """Runs inside the network namespace."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(f"inside the namespace: {network_is_unreachable()}")
    import httpx

    os.chdir("/")
    with bentoml_server(home, target=tag, cwd=Path("/")) as (url, ready):
        response = httpx.post(f"{url}/analyze", files={"image": ("f.jpg", frame_path.read_bytes())}, timeout=120)
        info = httpx.post(f"{url}/model_info", json={}, timeout=30).json()
    faces = response.json()
    print(f"served {tag} in {ready:.1f} s; /analyze -> {response.status_code}, {len(faces)} faces: "
          f"{[f['emotion'] for f in faces]}; model {info['tag']}")
    if response.status_code != 200 or len(faces) != 3:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--inner", nargs=3, metavar=("HOME", "TAG", "FRAME"))
    args = parser.parse_args()
    if args.inner:
        inner(Path(args.inner[0]), args.inner[1], Path(args.inner[2]))
        return
    print(machine_note())
    from emotion_recognition.media import encode_image

    with temp_home() as tmp:
        frame_path = tmp / "frame.jpg"
        frame_path.write_bytes(encode_image(three_face_frame(), "jpg", 90))
        home_a, home_b = tmp / "home-build", tmp / "home-serve"
        model, described = model_file(args.model, tmp)
        print(f"model: {described}")
        import_into(home_a, model)
        start = time.perf_counter()
        out = run([BENTOML, "build", "-o", "tag", "."], home_a, cwd=REPO_ROOT)
        tag = out.strip().splitlines()[-1].replace("__tag__:", "")
        print(f"bentoml build: {tag} in {time.perf_counter() - start:.1f} s")
        archive = tmp / "emotion.bento"
        run([BENTOML, "export", tag, str(archive)], home_a)
        print(f"bentoml export: {archive.name}, {archive.stat().st_size / 1024:.0f} KB")
        run([BENTOML, "import", str(archive)], home_b)
        models = json.loads(run([BENTOML, "models", "list", "-o", "json"], home_b) or "[]")
        print(f"fresh home after bentoml import: models {[m['tag'] for m in models]}")
        if shutil.which("unshare") and os.geteuid() == 0:
            subprocess.run(
                ["unshare", "--net", sys.executable, "-m", "bench.bento_offline", "--inner", str(home_b), tag, str(frame_path)],
                check=True, cwd=REPO_ROOT,
            )
        else:
            print("no unshare/root: serving with HTTP(S)_PROXY set to a dead port instead")
            os.environ.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost")
            import httpx

            with bentoml_server(home_b, target=tag, cwd=Path("/")) as (url, ready):
                response = httpx.post(f"{url}/analyze", files={"image": ("f.jpg", frame_path.read_bytes())}, timeout=120)
            print(f"served {tag} in {ready:.1f} s; /analyze -> {response.status_code}, {len(response.json())} faces")


if __name__ == "__main__":
    main()
