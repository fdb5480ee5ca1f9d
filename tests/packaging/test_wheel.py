"""The built wheel: one top-level name, every package folder and data file, and the engine
running in a clean venv with only its own dependencies (no MLflow, KFP, KServe or Evidently).
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from pruneops.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What ``pip install pruneops`` alone brings: the engine and the verbs that need nothing else.
ENGINE_REQUIREMENTS = {"torch", "numpy", "pydantic", "pyyaml", "typer", "rich", "safetensors", "torch-pruning"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, timeout=600)  # fmt: skip
    return next(out.glob("pruneops-*.whl"))


def _requirement_name(line: str) -> str:
    return re.split(r"[\s<>=!~\[;(]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_the_wheel_installs_one_top_level_name_and_every_package_folder(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"pruneops", "pruneops-0.1.0.dist-info"}
    # Every folder of Python code in the repository, under its installed name (a package
    # missing from pyproject's explicit list would be silently left out of the wheel).
    for installed, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).as_posix()
            package = installed.replace(".", "/") + ("" if relative == "." else f"/{relative}")
            assert f"{package}/__init__.py" in names, f"{package} is not in the wheel: add it to pyproject's packages"
    data = ("monitoring/prometheus/rules.yaml", "monitoring/grafana/serving.json",
            "pipelines/compiled/prune_and_register.yaml", "components/prune/README.md")  # fmt: skip
    assert {f"pruneops/{path}" for path in data} <= set(names)


def test_the_engine_alone_requires_no_registry_pipeline_or_server(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read("pruneops-0.1.0.dist-info/METADATA"))
    requires = metadata.get_all("Requires-Dist") or []
    always = {_requirement_name(line) for line in requires if "extra ==" not in line}
    assert always == ENGINE_REQUIREMENTS
    assert {"registry", "pipeline", "serving", "monitoring", "gpu", "all"} <= set(metadata.get_all("Provides-Extra"))


def _extra_distributions(extra: str) -> set[str]:
    """The distributions an extra brings, following ``pruneops[other]`` references."""
    found: set[str] = set()
    for line in PYPROJECT["project"]["optional-dependencies"][extra]:
        name = _requirement_name(line)
        if name == "pruneops":
            for other in re.search(r"\[(.*)\]", line).group(1).split(","):  # type: ignore[union-attr]
                found |= _extra_distributions(other.strip())
        else:
            found.add(name)
    return found


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_each_module_a_verb_checks_for_is_in_its_extra(extra: str) -> None:
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    brought = _extra_distributions(extra)
    for module in EXTRA_MODULES[extra]:
        owners = {name.lower().replace("_", "-") for name in providers[module]}
        assert owners & brought, f"{module} (from {owners}) is not in pruneops[{extra}]"


ENGINE_SCRIPT = """
import importlib.util, torch
from pruneops.pruning import MagnitudeConfig, WandaConfig, glob_filter, prune_, satisfies_nm
absent = [m for m in ("mlflow", "kfp", "kserve", "onnxruntime", "evidently", "sklearn", "fastapi")
          if importlib.util.find_spec(m) is not None]
assert not absent, f"not a clean venv: {absent}"
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
prune_(model, WandaConfig(pattern="2:4"), calibration=[torch.randn(16, 32)])
assert satisfies_nm(model[0].weight, 2, 4) and satisfies_nm(model[2].weight, 2, 4)
cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 3))
report = prune_(cnn, MagnitudeConfig(pattern="channels", sparsity=0.5), glob_filter(exclude=["2"]),
                example_inputs=torch.randn(1, 3, 8, 8))
assert cnn[0].out_channels == 8 and cnn(torch.randn(1, 3, 8, 8)).shape == (1, 4, 4, 4), report
from importlib.resources import files
assert (files("pruneops.monitoring") / "prometheus" / "rules.yaml").is_file()
print("engine ok")
"""


@pytest.mark.integration
@pytest.mark.slow
def test_a_clean_venv_with_the_wheel_alone_prunes_and_names_missing_extras(wheel: Path, tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    subprocess.run([bin_dir / "pip", "install", "--quiet", "--quiet", "-c", ROOT / "constraints.txt", wheel],
                   check=True, timeout=900)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}
    ran = subprocess.run([bin_dir / "python", "-c", ENGINE_SCRIPT], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0 and "engine ok" in ran.stdout, ran.stderr
    checked = subprocess.run([bin_dir / "pruneops", "check-recipe", ROOT / "recipes" / "wanda-2to4-gpu.yaml"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    refusals = {"registry": ["versions", "digits"], "serving": ["serve", "--model", "m"],
                "pipeline": ["run", "--model", "m", "--version", "1", "--recipe", "r.yaml"],
                "monitoring": ["controller", "--model", "m"]}  # fmt: skip
    for extra, verb in refusals.items():
        refused = subprocess.run([bin_dir / "pruneops", *verb], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=120)  # fmt: skip
        assert refused.returncode == 1, (verb, refused.stdout, refused.stderr)
        assert f"pip install 'pruneops[{extra}]'" in " ".join(refused.stderr.split()), refused.stderr
