"""Attacks through names a registry writer controls: arch.json's factory and replaced map, the task tag."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneops.errors import ModelFormatError, TaskError, UntrustedCodeError
from pruneops.modelio import ARCH_FILE, ArchSpec, load_model, save_model
from pruneops.tasks import load_task
from pruneops.trust import TRUSTED_ENV, is_trusted, resolve_module_class, trusted_prefixes

pytestmark = pytest.mark.unit


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path whose import writes a marker file: proof of code execution."""
    marker = tmp_path / "pwned"
    package = tmp_path / "site" / "evilpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        "import torch\nclass Net(torch.nn.Linear):\n    def __init__(self):\n        super().__init__(2, 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield marker
    sys.modules.pop("evilpkg", None)


def arch_with(folder: Path, **changes: object) -> None:
    data = json.loads((folder / ARCH_FILE).read_text())
    data.update(changes)
    (folder / ARCH_FILE).write_text(json.dumps(data))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    spec = ArchSpec("torch.nn:Linear", {"in_features": 2, "out_features": 2})
    return save_model(nn.Linear(2, 2), tmp_path / "model", spec)


@pytest.mark.parametrize(
    "factory",
    ["os:system", "subprocess:Popen", "builtins:eval", "evilpkg:Net", "pruneops_evil:Net",
     "pruneops.settings:state_dir", "pruneops.modelio:json", "torch:load", "..relative:Net", "os.path:join"],
)  # fmt: skip
def test_factory_outside_the_allow_list_is_refused_before_import(saved: Path, planted: Path, factory: str) -> None:
    arch_with(saved, factory=factory)
    with pytest.raises(UntrustedCodeError):
        load_model(saved)
    assert not planted.exists(), "the untrusted module was imported"


def test_replaced_map_is_checked_too(saved: Path, planted: Path) -> None:
    arch_with(saved, replaced={"": "evilpkg:Net"})
    with pytest.raises(UntrustedCodeError, match="not trusted"):
        load_model(saved)
    arch_with(saved, replaced={"": "pruneops.settings:actor"})
    with pytest.raises(UntrustedCodeError, match=r"not an nn\.Module subclass"):
        load_model(saved)
    assert not planted.exists()


@pytest.mark.parametrize("task", ["os:system", "evilpkg:Net", "pruneops.settings:actor", "pruneops.tasks.digits:build"])
def test_task_outside_the_allow_list_or_not_a_task_is_refused(planted: Path, task: str) -> None:
    with pytest.raises(TaskError):
        load_task(task)
    assert not planted.exists()


def test_the_operator_extends_the_allow_list(saved: Path, planted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUSTED_ENV, "evilpkg")
    assert trusted_prefixes()[-1] == "evilpkg" and is_trusted("evilpkg") and not is_trusted("evilpkgs")
    arch_with(saved, factory="evilpkg:Net", kwargs={})
    model = load_model(saved)
    assert isinstance(model, nn.Linear) and planted.read_text() == "imported"
    torch.testing.assert_close(model(torch.ones(1, 2)).shape, torch.Size([1, 2]))


def test_a_bad_setting_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUSTED_ENV, "acme; rm -rf /")
    with pytest.raises(UntrustedCodeError, match="not a module name"):
        resolve_module_class("torch.nn:Linear")


def test_kwargs_must_be_named_arguments(saved: Path) -> None:
    arch_with(saved, kwargs=[1, 2])
    with pytest.raises(ModelFormatError, match="kwargs must be an object"):
        load_model(saved)
