"""Load an exported program (``.pt2``, MLflow's default ``pytorch`` format) without running what it names.

MLflow 3 saves ``mlflow.pytorch`` models as ``data/model.pt2`` (``torch.export.save``) and calls
it the safe format. It is safe as MLflow writes it, but the archive is data a registry
writer controls, and ``torch.export.load`` trusts it (its docstring: "never load data from an
untrusted source"). In torch 2.13, shown by ``tests/pruneops/test_pt2.py`` (the payload runs):

- ``eval``: every ``expr_str`` (symbolic shapes) goes through ``sympy.sympify``;
- ``exec``: ``guards_code`` strings are compiled into a guard function by ``ep.module()``;
- unpickling: sample inputs that the weights-only loader refuses are loaded again with
  ``torch.load(weights_only=False)``.

Also in the loader, though not shown to run a payload: weights and constants marked
``use_pickle`` go to ``torch.load(weights_only=False)`` or ``pickle.loads``, and a node's
``target`` is resolved as any attribute chain from ``torch`` (its verifier refuses
``torch.os.system`` today).

:func:`check_archive` reads the archive as plain zip and JSON first and refuses all of these:
only the entries ``torch.export.save`` writes for one model, no pickled payload anywhere,
sample inputs that load with ``weights_only=True``, no guard code, expressions made only of
sympy constructors, numbers and symbol names, and node targets only from ``torch.ops.aten``,
``torch.ops.prims`` and a few ``_operator``/``math`` functions. What MLflow writes for an
ordinary model passes; :func:`load_exported` then loads it with torch.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pruneops.errors import ModelFormatError, UntrustedCodeError

#: The archive entries torch.export.save writes for one program named ``model``.
_ENTRIES = re.compile(
    r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+|data/sample_inputs/model\.pt)$"
)
_OP_TARGET = re.compile(r"^torch\.ops\.(aten|prims)\.[A-Za-z_]\w*\.[A-Za-z_]\w*$")
_PLAIN_TARGETS = frozenset(
    {f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow",
                                      "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")}
    | {f"math.{name}" for name in ("sqrt", "ceil", "floor", "trunc")}
    | {f"torch.{name}" for name in ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_sqrt", "sym_ite")}
)  # fmt: skip
#: Names an ``expr_str`` may use: sympy constructors and torch's sympy functions, never a builtin.
_EXPR_NAMES = frozenset(
    {"Symbol", "Integer", "Rational", "Float", "True", "False", "positive", "integer", "nonnegative", "real",
     "finite", "oo", "Max", "Min", "Abs", "Pow", "Mod", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
     "FloorDiv", "ModularIndexing", "CeilToInt", "PythonMod", "Where", "CleanDiv", "TruncToInt", "FloatTrueDiv",
     "IntTrueDiv", "ToFloat", "FloorToInt", "RoundToInt", "Identity"}
)  # fmt: skip
_SYMBOL = re.compile(r"^[a-z]+\d+$")
_EXPR_OPS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "**", "%", "<", ">", "<=", ">=", "==", "!="})


def load_exported(path: str | Path) -> Any:
    """Check a ``.pt2`` archive (:func:`check_archive`), load it and return its module (an ``nn.Module``).
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/m.pt2"
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    >>> torch.export.save(torch.export.export(model, (torch.randn(3, 4),)), path)
    >>> loaded = load_exported(path)
    >>> torch.allclose(loaded(torch.ones(3, 4)), model(torch.ones(3, 4)))
    True
    """
    import torch

    check_archive(path)
    try:
        return torch.export.load(str(path)).module()
    except Exception as err:  # noqa: BLE001 - torch raises many types for a broken archive
        first = str(err).splitlines()[0] if str(err) else repr(err)
        raise ModelFormatError(f"{path} is not a loadable exported program: {first}") from None


def check_archive(path: str | Path) -> None:
    """Refuse a ``.pt2`` archive that would make ``torch.export.load`` unpickle, eval, exec or call anything.

    Raises :class:`UntrustedCodeError` naming the first thing found, or :class:`ModelFormatError`
    when the file is not such an archive at all.

    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/m.pt2"
    >>> torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.randn(3, 4),)), path)
    >>> check_archive(path)  # what torch.export.save writes for one model passes
    >>> with zipfile.ZipFile(path, "a") as archive:
    ...     archive.writestr("m/data.pkl", b"a payload")
    >>> check_archive(path)
    Traceback (most recent call last):
    ...
    pruneops.errors.UntrustedCodeError: ...m.pt2: refusing pt2 entry 'data.pkl' (only one plain exported program ...)
    """
    try:
        with zipfile.ZipFile(path) as archive:
            _check_archive(archive, str(path))
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as err:
        raise ModelFormatError(f"{path} is not a pt2 archive: {err}") from None


def _check_archive(archive: zipfile.ZipFile, what: str) -> None:
    names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1:
        raise ModelFormatError(f"{what}: a pt2 archive has one top folder, found {sorted(roots)}")
    (root,) = roots
    for name in names:
        inner = name[len(root) + 1 :]
        if inner and not name.endswith("/") and not _ENTRIES.match(inner):
            raise UntrustedCodeError(f"{what}: refusing pt2 entry {inner!r} (only one plain exported program is read)")

    def read_json(inner: str) -> Any:
        return json.loads(archive.read(f"{root}/{inner}"))

    for kind in ("weights", "constants"):
        config = read_json(f"data/{kind}/model_{kind}_config.json").get("config", {})
        for fqn, payload in config.items():
            if payload.get("use_pickle") is not False:
                raise UntrustedCodeError(f"{what}: {kind} entry {fqn!r} is pickled (torch would unpickle it)")
            if kind == "constants" and not str(payload.get("path_name", "")).startswith("tensor_"):
                raise UntrustedCodeError(f"{what}: constant {fqn!r} is not a plain tensor")
    if f"{root}/data/sample_inputs/model.pt" in names:
        _check_weights_only(archive.read(f"{root}/data/sample_inputs/model.pt"), what)
    program = read_json("models/model.json")
    if program.get("guards_code"):
        raise UntrustedCodeError(f"{what}: the program carries guard code, which torch would exec")
    if program.get("graph_module", {}).get("graph", {}).get("custom_obj_values"):
        raise UntrustedCodeError(f"{what}: the program holds custom objects, which torch would unpickle")
    for key in program.get("range_constraints", {}):
        if not _SYMBOL.match(key):
            raise UntrustedCodeError(f"{what}: range constraint on {key[:60]!r}, not a symbol name")
    for key, value in _strings(program):
        if key == "target" and not (_OP_TARGET.match(value) or value in _PLAIN_TARGETS):
            raise UntrustedCodeError(f"{what}: node target {value[:80]!r} is not an ATen or prims operator")
        if key == "expr_str":
            _check_expression(value, what)


def _check_weights_only(data: bytes, what: str) -> None:
    """torch loads the sample inputs with ``weights_only=True`` and, if that fails, unpickles them."""
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the restricted unpickler refuses
        raise UntrustedCodeError(f"{what}: sample inputs need a full unpickle ({str(err).splitlines()[0]})") from None


def _check_expression(expr: str, what: str) -> None:
    """An ``expr_str`` may hold only sympy constructors, numbers, symbol names and arithmetic."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        raise UntrustedCodeError(f"{what}: expression {expr[:60]!r} does not parse") from None
    for token in tokens:
        kind, text = token.type, token.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.NUMBER):
            continue
        if kind == tokenize.NAME and (text in _EXPR_NAMES or _SYMBOL.match(text)):
            continue
        if kind == tokenize.STRING and _SYMBOL.match(text.strip("'\"")) and text[0] == text[-1] and text[0] in "'\"":
            continue
        if kind == tokenize.OP and text in _EXPR_OPS:
            continue
        raise UntrustedCodeError(f"{what}: expression {expr[:60]!r} uses {text!r}, which is not allowed")


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every (key, string) pair in a JSON document, depth first."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for child_key, child in value.items():
            yield from _strings(child, str(child_key))
    elif isinstance(value, list):
        for child in value:
            yield from _strings(child, key)
