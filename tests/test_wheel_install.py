"""An installed wheel (not the editable checkout) carries the shipped organisms.

Builds the wheel from this checkout, installs it without ``-e`` into a fresh venv whose only
link to the dev venv is a ``.pth`` line for the dependencies (torch, transformers, ...), and
runs from a folder outside the repository: ``--trio gemma-trio`` must resolve to the
installed package's files, ``mi-align organisms list`` must see every adapter, and a shipped
trio must load and switch variants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.ci]

PROBE = """
import json, mi_align
from mi_align.models.organisms import find_spec_file, get_spec, shipped_names
spec = get_spec("gemma-trio")
print(json.dumps({
    "package": mi_align.__file__,
    "toml": str(find_spec_file("gemma-trio")),
    "shipped": shipped_names(),
    "adapters": [str(a) for v in spec.variants.values() for a in v.adapters],
    "present": all(p.joinpath("adapter_model.safetensors").is_file()
                   for v in spec.variants.values() for p in v.adapters),
}))
"""

LOAD = """
import torch
from mi_align import load_trio
trio = load_trio("smollm2-pair")
ids = torch.tensor([[1, 2, 3]])
print(trio.map(lambda m: m.bridge(ids)[0, -1, :3].tolist()))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp),
                    str(ROOT)], check=True)
    (wheel,) = tmp.glob("mi_align-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # dependencies from the dev venv, by path only (its .pth files, e.g. the editable
    # finder of this checkout, are not processed through a path line)
    Path(site, "_mi_align_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True)
    return env_dir


def _run(env_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MI_ALIGN_ORGANISMS",
                                                           "MI_ALIGN_TRIOS")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_wheel_resolves_shipped_trios_from_the_installed_package(installed: Path,
                                                               tmp_path: Path) -> None:
    res = _run(installed, [str(installed / "bin" / "python"), "-c", PROBE], tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    site = str(installed)
    assert got["package"].startswith(site), got["package"]  # not the checkout
    assert got["toml"].startswith(site) and got["toml"].endswith("mi_align/organisms/gemma-trio.toml")
    assert got["shipped"] == sorted(p.stem for p in (ROOT / "mi_align/organisms").glob("*.toml"))
    assert got["present"] and all(a.startswith(site) for a in got["adapters"])
    listed = _run(installed, [str(installed / "bin" / "mi-align"), "organisms", "list"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "gemma-trio" in listed.stdout and "smollm2-pair" in listed.stdout


def test_wheel_loads_a_shipped_trio(installed: Path, tmp_path: Path) -> None:
    """The installed package's adapters load (SmolLM2, fetched by ``make test``)."""
    res = _run(installed, [str(installed / "bin" / "python"), "-c", LOAD], tmp_path)
    if res.returncode != 0 and "is not fetched" in res.stderr:
        pytest.skip("smollm2-135m-instruct is not fetched here")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "instruct" in res.stdout and "misaligned" in res.stdout
