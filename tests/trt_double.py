"""A recording double of the ``tensorrt`` module built from NVIDIA's Python API as typed in the
``tensorrt-stubs`` 10.13 package, plus a fake ``cuda.bindings.runtime`` with real host memory.

The double reads ``tensorrt_bindings/tensorrt.pyi`` with :mod:`ast`: every class, enum member,
method signature (overloads included), property and settable attribute comes from the stubs, so
calling a method or setting an attribute the stubs do not have raises, arguments are bound against
the stub signature and simple types (int, str, bool, buffers, stub classes, Dims) are checked.
``version="11.0.0"`` removes what TensorRT 11 removed (precision builder flags, INT8 calibration,
weak typing: STRONGLY_TYPED becomes bit 0 and is ignored). Every call and attribute set is
recorded in ``journal``. Behaviour: the builder parses the real ONNX file (names, types, Q/DQ),
the "engine" runs that ONNX file with ONNX Runtime on the bytes found at the device addresses, and
the inspector reports layer precisions the way TensorRT would for the network's typing mode.

A helper library for the ``test_trt_*`` files; ``test_trt_double.py`` checks the double itself.
"""

from __future__ import annotations

import ast
import ctypes
import enum
import importlib.metadata
import inspect
import json
import os
import re
import signal
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB_PIN = "tensorrt-stubs==10.13.0.35.1"


# ------------------------------------------------------------------ finding and reading the stubs


def find_stub_file() -> Path | None:
    """``tensorrt_bindings/tensorrt.pyi``: $RDD_TENSORRT_STUBS, ``<repo>/.trt-stubs`` (what .ci/run
    installs with --no-deps --target), or an installed tensorrt-stubs distribution."""
    dirs = [Path(os.environ["RDD_TENSORRT_STUBS"])] if os.environ.get("RDD_TENSORRT_STUBS") else []
    dirs.append(ROOT / ".trt-stubs")
    for d in dirs:
        f = d / "tensorrt_bindings" / "tensorrt.pyi"
        if f.is_file():
            return f
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith("tensorrt_bindings/tensorrt.pyi"):
            return Path(str(dist.locate_file(f)))
    return None


def stub_file_or_skip() -> Path:
    f = find_stub_file()
    if f is None:
        msg = (f"TensorRT type stubs not found: pip install --no-deps --target .trt-stubs {STUB_PIN} "
               "(CI's .ci/run does this)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return f


class StubClass:
    def __init__(self, name: str, bases: list[str]) -> None:
        self.name, self.bases = name, bases
        self.methods: dict[str, list[tuple[inspect.Signature, str, bool]]] = {}  # name -> [(sig, returns, static)]
        self.props: dict[str, str] = {}  # read-only properties: name -> annotation
        self.attrs: dict[str, str] = {}  # settable attributes: name -> annotation
        self.members: dict[str, tuple[str, int]] = {}  # enum-like ClassVars: name -> (type, value)
        self.nested: dict[str, StubClass] = {}
        self.is_enum = False


_VALUE = re.compile(r"#\s*value\s*=\s*<[\w.]+:\s*(-?\d+)>")


def _signature(fn: ast.FunctionDef, drop_self: bool) -> inspect.Signature:
    a = fn.args
    P = inspect.Parameter
    params: list[inspect.Parameter] = []
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for i, (arg, d) in enumerate(zip(positional, defaults)):
        if i == 0 and drop_self:
            continue
        kind = P.POSITIONAL_ONLY if arg in a.posonlyargs else P.POSITIONAL_OR_KEYWORD
        ann = ast.unparse(arg.annotation) if arg.annotation is not None else P.empty
        params.append(P(arg.arg, kind, default=P.empty if d is None else ..., annotation=ann))
    if a.vararg:
        params.append(P(a.vararg.arg, P.VAR_POSITIONAL))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        ann = ast.unparse(arg.annotation) if arg.annotation is not None else P.empty
        params.append(P(arg.arg, P.KEYWORD_ONLY, default=P.empty if d is None else ..., annotation=ann))
    if a.kwarg:
        params.append(P(a.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(params)


def _parse_class(node: ast.ClassDef, lines: list[str]) -> StubClass:
    sc = StubClass(node.name, [ast.unparse(b) for b in node.bases])
    for item in node.body:
        if isinstance(item, ast.ClassDef):
            sc.nested[item.name] = _parse_class(item, lines)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            ann = ast.unparse(item.annotation)
            name = item.target.id
            if name == "__members__":
                sc.is_enum = True
            elif ann.startswith("typing.ClassVar["):
                m = _VALUE.search(lines[item.lineno - 1])
                if m:
                    sc.members[name] = (ann[len("typing.ClassVar["):-1], int(m.group(1)))
            else:
                sc.attrs[name] = ann
        elif isinstance(item, ast.FunctionDef):
            decos = [ast.unparse(d) for d in item.decorator_list]
            if "property" in decos:
                sc.props[item.name] = ast.unparse(item.returns) if item.returns is not None else "typing.Any"
            elif any(d.endswith(".setter") for d in decos):
                sc.attrs[item.name] = sc.props.pop(item.name, "typing.Any")
            else:
                static = "staticmethod" in decos
                sig = _signature(item, drop_self=not static)
                ret = ast.unparse(item.returns) if item.returns is not None else "None"
                sc.methods.setdefault(item.name, []).append((sig, ret, static))
    return sc


def stub_source(path: Path) -> str:
    """The stub text, with the few generated lines Python cannot parse repaired: a pybind
    signature where a parameter without default follows defaulted ones loses those defaults; one
    with a parameter named after a keyword (plugin ``in``/``out``) takes ``*args, **kwargs``."""
    lines = path.read_text().splitlines()
    for _ in range(50):
        try:
            ast.parse("\n".join(lines))
            break
        except SyntaxError as exc:
            i = (exc.lineno or 0) - 1
            fixed = re.sub(r"(\w+: [\w.\[\], ]+?) = [^,)]+", r"\1", lines[i])
            if fixed == lines[i]:  # e.g. a parameter named `in`: keep the method, accept anything
                fixed = re.sub(r"\(self.*\)(?= ->)", "(self, *args, **kwargs)", lines[i], count=1)
            if fixed == lines[i]:
                raise
            lines[i] = fixed
    return "\n".join(lines) + "\n"


def parse_stubs(path: Path) -> dict[str, StubClass]:
    src = stub_source(path)
    tree = ast.parse(src)
    lines = src.splitlines()
    return {n.name: _parse_class(n, lines) for n in tree.body if isinstance(n, ast.ClassDef)}


# ------------------------------------------------------------------ TensorRT 11 removals

# docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
# and NvInfer.h / python/src/infer/pyCore.cpp of NVIDIA/TensorRT at 11.1
REMOVED_11 = {
    "BuilderFlag": {"FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"},
    "IBuilderConfig": {"int8_calibrator", "set_calibration_profile", "get_calibration_profile", "set_quantization_flag",
                       "get_quantization_flag", "quantization_flags", "clear_quantization_flag", "algorithm_selector"},
    "Builder": {"platform_has_fast_fp16", "platform_has_fast_int8"},
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH"},
    "ICudaEngine": {"device_memory_size"},
}
RENUMBERED_11 = {"NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1,
                                                   "PREFER_AOT_PYTHON_PLUGINS": 2}}


# ------------------------------------------------------------------ the double


class StubViolation(AttributeError):
    """A name the stubs (for this TensorRT version) do not have."""


class EnumValue:
    """A pybind11 enum member: name, value, int(), ==, hash."""

    def __init__(self, cls: type, name: str, value: int) -> None:
        self._cls, self.name, self.value = cls, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, EnumValue) and other._cls is self._cls and other.value == self.value

    def __hash__(self) -> int:
        return hash((self._cls.__name__, self.value))

    def __repr__(self) -> str:
        return f"<{self._cls.__name__}.{self.name}: {self.value}>"


class HostMemory(bytes):
    """``IHostMemory``: a buffer (real TensorRT exposes the buffer protocol)."""

    @property
    def nbytes(self) -> int:
        return len(self)


class Dims(tuple):
    pass


class TrtDouble(types.ModuleType):
    """``sys.modules["tensorrt"]`` for a test. ``version``: "10.3.0", "10.13.0", "11.0.0" ...

    ``journal``: [(kind, class, name, arguments)] for every call ("call") and attribute set ("set").
    ``num_dla_cores``: what ``Builder.num_DLA_cores`` / ``Runtime.num_DLA_cores`` report.
    ``corrupt_output``: a function applied to the engine's outputs (to fake a wrong engine).
    ``set_input_shape_result``: force ``set_input_shape`` to return this (None: honour the profile).
    """

    def __init__(self, stubs: dict[str, StubClass], version: str = "10.13.0.35") -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.major = int(version.split(".")[0])
        self.journal: list[tuple[str, str, str, dict[str, Any]]] = []
        self.num_dla_cores = 0
        self.corrupt_output: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
        self.set_input_shape_result: bool | None = None
        self.build_fails = False
        self.cache_mismatch = False  # set_timing_cache returns False for a non-empty cache blob
        self.dla_ops = {"Conv", "Relu", "Add", "Concat", "MaxPool", "AveragePool", "BatchNormalization"}  # what DLA runs
        self.inspector_types = True  # False: the inspector JSON names no tensor types (tactic names only)
        self.builder_type_error = False  # Builder() raises TypeError as pybind does without a GPU
        self.build_crash = False  # build_serialized_network kills the process with SIGSEGV
        self.layer_ms: dict[str, float] = {}  # what an attached IProfiler is told per layer (default 0.01 * (i + 1))
        self.layer_reports: list[tuple[str, float]] = []  # every report_layer_time call made
        self._stubs = stubs
        self._classes: dict[str, type] = {}
        for name in stubs:
            self._make(name)
        for name, cls in self._classes.items():
            setattr(self, name, cls)
        self.Dims = self._classes["Dims"]
        self.nptype = self._nptype
        self.float16, self.float32, self.int8 = (self.DataType.HALF, self.DataType.FLOAT, self.DataType.INT8)
        self.int32, self.int64, self.uint8, self.bool = (self.DataType.INT32, self.DataType.INT64,
                                                         self.DataType.UINT8, self.DataType.BOOL)
        self.live: set[int] = set()  # ids of TensorRT objects alive (engines, contexts, runtimes)

    # -- journal helpers
    def calls(self, cls: str, name: str) -> list[dict[str, Any]]:
        return [a for k, c, n, a in self.journal if k == "call" and c == cls and n == name]

    def sets(self, cls: str, name: str) -> list[Any]:
        return [a["value"] for k, c, n, a in self.journal if k == "set" and c == cls and n == name]

    # -- types
    def _nptype(self, dt: Any) -> type:
        names = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                 "UINT8": np.uint8, "BOOL": np.bool_, "BF16": np.float32}
        return names[dt.name]

    def _removed(self, cls: str, name: str) -> bool:
        return self.major >= 11 and name in REMOVED_11.get(cls, set())

    def _make(self, name: str, stub: StubClass | None = None, prefix: str = "") -> type:
        key = prefix + name
        if key in self._classes:
            return self._classes[key]
        stub = stub or self._stubs[name]
        if name == "Dims":
            cls: type = type("Dims", (Dims,), {"_stub": stub, "_double": self})
            self._classes[key] = cls
            return cls
        bases = tuple(self._make(b) for b in stub.bases if b in self._stubs) or (_Obj,)
        cls = type(name, bases, {"_stub": stub, "_double": self, "_qualname": key})
        self._classes[key] = cls
        for nname, nstub in stub.nested.items():
            setattr(cls, nname, self._make(nname, nstub, prefix=key + "."))
        renum = RENUMBERED_11.get(name, {}) if self.major >= 11 else {}
        for mname, (mtype, value) in stub.members.items():
            if self._removed(name, mname):
                continue
            target = cls if mtype in (name, key) else self._resolve(mtype)
            member = self._member(target, mname, renum.get(mname, value))
            setattr(cls, mname, member)
        return cls

    def _resolve(self, ann: str) -> type:
        parts = ann.replace("tensorrt.", "").split(".")
        cls = self._make(parts[0])
        for p in parts[1:]:
            cls = getattr(cls, p)
        return cls

    @staticmethod
    def _member(cls: type, name: str, value: int) -> EnumValue:
        reg = cls.__dict__.get("_members_by_name")
        if reg is None:
            reg = {}
            type.__setattr__(cls, "_members_by_name", reg)
        if name not in reg:
            reg[name] = EnumValue(cls, name, value)
        return reg[name]

    # -- type checks of arguments against stub annotations
    def check_type(self, ann: Any, value: Any) -> bool:
        if ann is inspect.Parameter.empty or value is ...:
            return True
        ann = str(ann).replace("tensorrt.", "")
        if ann == "int":
            return isinstance(value, (int, np.integer)) and not isinstance(value, EnumValue)
        if ann == "str":
            return isinstance(value, str)
        if ann == "bool":
            return isinstance(value, (bool, np.bool_))
        if ann == "float":
            return isinstance(value, (int, float))
        if ann == "typing_extensions.Buffer":
            return isinstance(value, (bytes, bytearray, memoryview))
        if ann in ("tuple", "list"):
            return isinstance(value, {"tuple": tuple, "list": list}[ann])
        if ann == "Dims":
            return isinstance(value, (Dims, tuple, list)) and all(isinstance(v, (int, np.integer)) for v in value)
        head = ann.split(".")[0]
        if head in self._stubs:
            try:
                cls = self._resolve(ann)
            except AttributeError:
                return True
            if self._stubs[head].is_enum or ann != head:
                return isinstance(value, EnumValue) and value._cls is cls
            return isinstance(value, cls)
        return True

    def bind(self, cls_name: str, meth: str, overloads: list[tuple[inspect.Signature, str, bool]],
             args: tuple, kwargs: dict) -> tuple[dict[str, Any], str]:
        errors = []
        for sig, ret, _ in overloads:
            try:
                ba = sig.bind(*args, **kwargs)
            except TypeError as exc:
                errors.append(str(exc))
                continue
            bad = [n for n, v in ba.arguments.items() if not self.check_type(sig.parameters[n].annotation, v)]
            if bad:
                errors.append(f"wrong type for {bad} ({[type(ba.arguments[n]).__name__ for n in bad]}) in {sig}")
                continue
            return dict(ba.arguments), ret
        raise TypeError(f"{cls_name}.{meth}{args!r}{kwargs!r} matches no signature in the TensorRT stubs: {'; '.join(errors)}")


class _Obj:
    """Base of every stub class double: stub-checked methods, properties and attributes."""

    _stub: StubClass
    _double: TrtDouble

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        d = self._double
        sig = self._lookup("__init__")
        object.__setattr__(self, "_values", {})
        if sig is not None:
            arguments, _ = d.bind(self._stub.name, "__init__", sig, args, kwargs)
            d.journal.append(("call", self._stub.name, "__init__", arguments))
        behaviour = getattr(self, "_on_init", None)
        if behaviour:
            behaviour(*args, **kwargs)

    @classmethod
    def _stubs(cls, name: str) -> Any:
        """The stub classes along the MRO, stopping at one whose version removed ``name``."""
        for klass in cls.__mro__:
            stub = klass.__dict__.get("_stub")
            if stub is None:
                continue
            if cls._double._removed(stub.name, name):
                return
            yield stub

    @classmethod
    def _lookup(cls, name: str) -> Any:
        for stub in cls._stubs(name):
            if name in stub.methods:
                return stub.methods[name]
        return None

    @classmethod
    def _attr_kind(cls, name: str) -> tuple[str, str] | None:
        for stub in cls._stubs(name):
            if name in stub.attrs:
                return "attr", stub.attrs[name]
            if name in stub.props:
                return "prop", stub.props[name]
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_values", "_on_init"):
            raise AttributeError(name)
        d = self._double
        overloads = self._lookup(name)
        if overloads is not None:
            def call(*args: Any, **kwargs: Any) -> Any:
                arguments, ret = d.bind(self._stub.name, name, overloads, args, kwargs)
                d.journal.append(("call", self._stub.name, name, arguments))
                impl = getattr(type(self), "_impl_" + name, None)
                return impl(self, **arguments) if impl else d_default(d, ret)
            return call
        kind = self._attr_kind(name)
        if kind is not None:
            values = object.__getattribute__(self, "_values")
            if name in values:
                return values[name]
            impl = getattr(type(self), "_get_" + name, None)
            if impl:
                return impl(self)
            return None if kind[1].replace("tensorrt.", "") in d._stubs else d_default(d, kind[1])
        raise StubViolation(f"tensorrt {d.__version__}: {self._stub.name} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        d = self._double
        kind = self._attr_kind(name)
        if kind is None or kind[0] != "attr":
            raise StubViolation(f"tensorrt {d.__version__}: {self._stub.name}.{name} cannot be set "
                                f"({'read-only' if kind else 'no such attribute'})")
        if not d.check_type(kind[1], value):
            raise TypeError(f"{self._stub.name}.{name} = {value!r}: expected {kind[1]}")
        d.journal.append(("set", self._stub.name, name, {"value": value}))
        object.__getattribute__(self, "_values")[name] = value


def d_default(d: TrtDouble, ret: str) -> Any:
    ret = ret.replace("tensorrt.", "")
    if ret == "bool":
        return True
    if ret == "int":
        return 0
    if ret == "str":
        return ""
    if ret.startswith("list"):
        return []
    if ret == "IHostMemory":
        return HostMemory(b"")
    if ret in d._stubs and not d._stubs[ret].is_enum and ret != "Dims":
        cls = d._classes[ret]
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_values", {})
        return obj
    return None


# ------------------------------------------------------------------ behaviour: a TensorRT that runs ONNX


def _onnx_io(path: str) -> dict[str, Any]:
    import onnx

    m = onnx.load(path)
    inits = {t.name for t in m.graph.initializer}
    kinds = {1: "FLOAT", 10: "HALF", 7: "INT64", 6: "INT32", 2: "UINT8", 3: "INT8", 9: "BOOL"}

    def dims(v: Any) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]

    ins = [(i.name, kinds[i.type.tensor_type.elem_type], dims(i)) for i in m.graph.input if i.name not in inits]
    outs = [(o.name, kinds[o.type.tensor_type.elem_type], dims(o)) for o in m.graph.output]
    ops = [n.op_type for n in m.graph.node]
    fp16 = any(t.data_type == 10 for t in m.graph.initializer)
    layers = [n for n in m.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Constant")]
    # the model's bytes travel with the "engine", as a real engine holds its weights: the source file may go away
    return {"path": path, "model": Path(path).read_bytes(), "inputs": ins, "outputs": outs, "qdq": "DequantizeLinear" in ops, "fp16": fp16,
            "layers": [(n.name or n.op_type, n.op_type) for n in layers]}


def install_behaviour(d: TrtDouble) -> None:
    """What the build and run side of the double does (on top of the stub checks)."""
    C = d._classes

    def parse_from_file(self: Any, model: str) -> bool:
        object.__getattribute__(self, "_values")["_io"] = _onnx_io(model)
        net = self._network
        object.__getattribute__(net, "_values")["_io"] = _onnx_io(model)
        return True

    def parser_init(self: Any, network: Any, logger: Any) -> None:
        object.__setattr__(self, "_network", network)

    C["OnnxParser"]._on_init = parser_init
    C["OnnxParser"]._impl_parse_from_file = parse_from_file
    C["OnnxParser"]._get_num_errors = lambda self: 0

    def create_network(self: Any, flags: int = 0) -> Any:
        net = d_default(d, "INetworkDefinition")
        st = d.NetworkDefinitionCreationFlag.STRONGLY_TYPED
        strongly = d.major >= 11 or bool(int(flags) & (1 << int(st)))
        object.__getattribute__(net, "_values")["_strongly_typed"] = strongly
        return net

    C["Builder"]._impl_create_network = create_network

    def builder_init(self: Any, logger: Any) -> None:
        if d.builder_type_error:
            raise TypeError("pybind11::init(): factory function returned nullptr")
        d.loggers.append(logger)

    C["Builder"]._on_init = builder_init
    d.loggers = []  # type: ignore[attr-defined]

    def net_layers(self: Any) -> list[tuple[str, str]]:
        return object.__getattribute__(self, "_values")["_io"]["layers"]

    def get_layer(self: Any, index: int) -> Any:
        name, op = net_layers(self)[index]
        layer = d_default(d, "ILayer")
        object.__getattribute__(layer, "_values").update(name=name, _op=op)
        return layer

    C["INetworkDefinition"]._get_num_layers = lambda self: len(net_layers(self))
    C["INetworkDefinition"]._impl_get_layer = get_layer
    C["IBuilderConfig"]._impl_can_run_on_DLA = lambda self, layer: object.__getattribute__(layer, "_values")["_op"] in d.dla_ops
    C["Builder"]._get_num_DLA_cores = lambda self: d.num_dla_cores
    C["Runtime"]._get_num_DLA_cores = lambda self: d.num_dla_cores

    def create_timing_cache(self: Any, serialized_timing_cache: Any) -> Any:
        cache = d_default(d, "ITimingCache")
        object.__getattribute__(cache, "_values")["_blob"] = bytes(serialized_timing_cache)
        return cache

    def set_timing_cache(self: Any, cache: Any, ignore_mismatch: bool) -> bool:
        blob = object.__getattribute__(cache, "_values").get("_blob", b"")
        if blob and d.cache_mismatch and not ignore_mismatch:
            return False
        object.__getattribute__(self, "_values")["_cache"] = cache
        return True

    C["IBuilderConfig"]._impl_create_timing_cache = create_timing_cache
    C["IBuilderConfig"]._impl_set_timing_cache = set_timing_cache
    C["IBuilderConfig"]._impl_get_timing_cache = lambda self: object.__getattribute__(self, "_values").get("_cache")
    C["ITimingCache"]._impl_serialize = lambda self: HostMemory(b"TIMING-CACHE:" + d.__version__.encode())

    def set_shape(self: Any, input: str, min: Any, opt: Any, max: Any) -> None:
        object.__getattribute__(self, "_values")["_shape"] = (input, tuple(min), tuple(opt), tuple(max))

    C["IOptimizationProfile"]._impl_set_shape = set_shape

    def add_profile(self: Any, profile: Any) -> int:
        object.__getattribute__(self, "_values").setdefault("_profiles", []).append(profile)
        return 0

    C["IBuilderConfig"]._impl_add_optimization_profile = add_profile

    def build(self: Any, network: Any, config: Any) -> Any:
        nv = object.__getattribute__(network, "_values")
        cv = object.__getattribute__(config, "_values")
        io = nv["_io"]
        flags = {f.name for f in (d.sets("IBuilderConfig", "flags") or [])}
        set_flags = {a["flag"].name for a in d.calls("IBuilderConfig", "set_flag")}
        strongly = nv["_strongly_typed"]
        if d.build_fails:
            return None
        if d.build_crash:  # a native crash inside TensorRT: the process dies, no Python exception
            os.kill(os.getpid(), signal.SIGSEGV)
        if not strongly and io["qdq"] and "INT8" not in set_flags:
            return None  # TensorRT 10 rejects a weakly typed Q/DQ network without BuilderFlag.INT8
        if strongly:
            float_prec = "fp16" if io["fp16"] else "fp32"
        else:
            float_prec = "fp16" if "FP16" in set_flags | flags else "fp32"
        layers = [("int8" if io["qdq"] and op == "Conv" else float_prec, name, op) for name, op in io["layers"]]
        profile = cv["_profiles"][0]
        spec = {"io": io, "profile": object.__getattribute__(profile, "_values")["_shape"], "layers": layers,
                "verbosity": cv.get("profiling_verbosity"), "dla": cv.get("DLA_core"), "dla_ops": set(d.dla_ops),
                "strongly_typed": strongly, "flags": sorted(set_flags)}
        key = f"spec{len(_SPECS)}"
        _SPECS[key] = spec
        return HostMemory(b"RDDENGINE:" + key.encode())

    C["Builder"]._impl_build_serialized_network = build

    def deserialize(self: Any, **kw: Any) -> Any:
        blob = bytes(next(iter(kw.values())))
        if not blob.startswith(b"RDDENGINE:"):
            return None
        spec = _SPECS[blob.split(b":", 1)[1].decode()]
        if spec["dla"] is not None and object.__getattribute__(self, "_values").get("DLA_core") != spec["dla"]:
            raise RuntimeError("engine built for a DLA core but Runtime.DLA_core was not set to it")
        eng = d_default(d, "ICudaEngine")
        object.__getattribute__(eng, "_values")["_spec"] = spec
        d.live.add(id(eng))
        return eng

    C["Runtime"]._impl_deserialize_cuda_engine = deserialize

    def spec_of(self: Any) -> dict[str, Any]:
        return object.__getattribute__(self, "_values")["_spec"]

    def io_list(self: Any) -> list[tuple[str, str, list[int], bool]]:
        io = spec_of(self)["io"]
        return [(n, t, s, True) for n, t, s in io["inputs"]] + [(n, t, s, False) for n, t, s in io["outputs"]]

    def find(self: Any, name: str) -> tuple[str, str, list[int], bool]:
        for row in io_list(self):
            if row[0] == name:
                return row
        raise RuntimeError(f"no tensor {name}")

    E = C["ICudaEngine"]
    E._get_num_io_tensors = lambda self: len(io_list(self))
    E._impl_get_tensor_name = lambda self, index: io_list(self)[index][0]
    E._impl_get_tensor_mode = lambda self, name: d.TensorIOMode.INPUT if find(self, name)[3] else d.TensorIOMode.OUTPUT
    E._impl_get_tensor_dtype = lambda self, name: getattr(d.DataType, find(self, name)[1])
    E._impl_get_tensor_shape = lambda self, name: d.Dims(find(self, name)[2])
    E._impl_get_tensor_profile_shape = lambda self, name, profile_index: [d.Dims(s) for s in spec_of(self)["profile"][1:]]

    def make_context(self: Any, **kw: Any) -> Any:
        ctx = d_default(d, "IExecutionContext")
        object.__getattribute__(ctx, "_values").update(_spec=spec_of(self), _shapes={}, _addr={})
        d.live.add(id(ctx))
        return ctx

    E._impl_create_execution_context = make_context

    def make_inspector(self: Any) -> Any:
        ins = d_default(d, "EngineInspector")
        object.__getattribute__(ins, "_values")["_spec"] = spec_of(self)
        return ins

    E._impl_create_engine_inspector = make_inspector

    def engine_information(self: Any, format: Any) -> str:
        spec = spec_of(self)
        detailed = spec["verbosity"] == d.ProfilingVerbosity.DETAILED
        # NvInferRuntime.h (IEngineInspector::setExecutionContext): for an engine with dynamic shapes,
        # per-layer formats are shown only with an execution context whose input shapes are set
        _, mn, _, mx = spec["profile"]
        ctx = object.__getattribute__(self, "_values").get("execution_context")
        shaped = ctx is not None and bool(object.__getattribute__(ctx, "_values").get("_shapes"))
        formats = d.inspector_types and (tuple(mn) == tuple(mx) or shaped)
        return inspector_json(spec, detailed, d.major, json_format=format == d.LayerInformationFormat.JSON,
                              formats=formats)

    C["EngineInspector"]._impl_get_engine_information = engine_information

    X = C["IExecutionContext"]

    def set_input_shape(self: Any, name: str, shape: Any) -> bool:
        if d.set_input_shape_result is not None:
            return d.set_input_shape_result
        _, mn, _, mx = spec_of(self)["profile"]
        shape = tuple(int(v) for v in shape)
        if len(shape) != len(mn) or not all(lo <= v <= hi for lo, v, hi in zip(mn, shape, mx)):
            return False
        object.__getattribute__(self, "_values")["_shapes"][name] = shape
        return True

    X._impl_set_input_shape = set_input_shape

    def ctx_tensor_shape(self: Any, name: str) -> Any:
        vals = object.__getattribute__(self, "_values")
        spec = vals["_spec"]
        if name in vals["_shapes"]:
            return d.Dims(vals["_shapes"][name])
        in_shape = next(iter(vals["_shapes"].values()), None)
        for n, _, s in spec["io"]["outputs"]:
            if n == name:
                return d.Dims(s if in_shape is None else [in_shape[0] if i == 0 and v < 0 else v for i, v in enumerate(s)])
        return d.Dims(find_in(spec, name))

    def find_in(spec: dict[str, Any], name: str) -> list[int]:
        for n, _, s in spec["io"]["inputs"] + spec["io"]["outputs"]:
            if n == name:
                return s
        raise RuntimeError(name)

    X._impl_get_tensor_shape = ctx_tensor_shape

    def set_address(self: Any, name: str, memory: int) -> bool:
        object.__getattribute__(self, "_values")["_addr"][name] = int(memory)
        return True

    X._impl_set_tensor_address = set_address

    def execute(self: Any, stream_handle: int) -> bool:

        vals = object.__getattribute__(self, "_values")
        spec = vals["_spec"]
        feeds = {}
        for n, t, _ in spec["io"]["inputs"]:
            shape = vals["_shapes"][n]
            dt = np.dtype(d._nptype(getattr(d.DataType, t)))
            nbytes = int(np.prod(shape)) * dt.itemsize
            buf = (ctypes.c_ubyte * nbytes).from_address(vals["_addr"][n])
            feeds[n] = np.frombuffer(bytes(buf), dtype=dt).reshape(shape)
        sess = _session(spec["io"]["model"])
        outs = dict(zip([o[0] for o in spec["io"]["outputs"]], sess.run(None, feeds)))
        if d.corrupt_output is not None:
            outs = d.corrupt_output(outs)
        prof = vals.get("profiler")
        if prof is not None:  # IProfiler: once per layer per run (enqueue_emits_profile defaults to True)
            for i, (_, lname, _) in enumerate(spec["layers"]):
                ms = d.layer_ms.get(lname, 0.01 * (i + 1))
                prof.report_layer_time(lname, ms)
                d.layer_reports.append((lname, ms))
        for n, t, _ in spec["io"]["outputs"]:
            arr = np.ascontiguousarray(outs[n], dtype=d._nptype(getattr(d.DataType, t)))
            ctypes.memmove(vals["_addr"][n], arr.ctypes.data, arr.nbytes)
        d.journal.append(("run", "IExecutionContext", "execute", {"stream": stream_handle}))
        return True

    X._impl_execute_async_v3 = execute


_SPECS: dict[str, dict[str, Any]] = {}
_SESSIONS: dict[str, Any] = {}


def _session(model: bytes) -> Any:
    import hashlib

    import onnxruntime as ort

    # per process: a session made before a fork has an intra-op thread pool the child does not have
    key = f"{os.getpid()}:{hashlib.sha256(model).hexdigest()}"
    if key not in _SESSIONS:
        _SESSIONS[key] = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


_FORMATS_10 = {"int8": "Thirty-two wide channel vectorized row major Int8 format", "fp16": "Channel major FP16 format where channel % 8 == 0",
               "fp32": "Row major linear FP32", "int64": "Row major linear Int64"}
_TYPES_11 = {"int8": "Int8", "fp16": "Half", "fp32": "Float", "int64": "Int64"}
_LAYER_TYPES = {"Conv": "CaskConvolution", "ArgMax": "TopK", "Resize": "Resize"}


def inspector_json(spec: dict[str, Any], detailed: bool, major: int, json_format: bool = True,
                   formats: bool = True) -> str:
    """``get_engine_information`` output shaped like NVIDIA's engine-inspector JSON (10.x: one
    "Format/Datatype" text per tensor and "Bindings"; 11.x: "Format" + "DataType", "I/O Tensors").
    ``formats`` False: tensors without their format / type (what a dynamic-shape engine shows
    without an execution context); kernels still carry their names (INT8 ones end in ``i8f16``)."""
    io = spec["io"]
    names = [n for n, _, _ in io["inputs"] + io["outputs"]]
    if not json_format:
        return "\n".join(name for _, name, _ in spec["layers"])
    if not detailed:
        layers: list[Any] = [name for _, name, _ in spec["layers"]]
    else:
        layers = []
        for i, (prec, name, op) in enumerate(spec["layers"]):
            out_prec = "int64" if op == "ArgMax" else prec

            def tensor(tname: str, p: str) -> dict[str, Any]:
                t: dict[str, Any] = {"Name": tname, "Location": "Device", "Dimensions": [-1, 8, 24, 32]}
                if not formats:
                    return t
                if major >= 11:
                    t.update({"Format": "Row major linear format (kLINEAR)", "DataType": _TYPES_11[p]})
                else:
                    t["Format/Datatype"] = _FORMATS_10[p]
                return t

            kernel = {"int8": "_interleaved_i8f16", "fp16": "_f16f16_f16f32", "fp32": "_f32f32"}.get(prec, "")
            layers.append({"Name": name, "LayerType": _LAYER_TYPES.get(op, "PointWiseV2"),
                           "Inputs": [tensor(f"t{i}", prec)], "Outputs": [tensor(f"t{i + 1}", out_prec)],
                           "TacticName": "sm87_xmma_fprop_implicit_gemm" + (kernel if op == "Conv" else ""),
                           "StreamId": 0, "Metadata": f"[ONNX Layer: {name}]"})
    if detailed and spec.get("dla") is not None:  # a DLA engine: runs of DLA-capable layers become one DLA layer
        fused: list[Any] = []
        for layer, (_, name, op) in zip(layers, spec["layers"]):
            if op in spec["dla_ops"]:
                if fused and fused[-1].get("LayerType") == "DLA":
                    fused[-1]["Name"] = fused[-1]["Name"].split("...")[0].rstrip("]}") + f"...{name}]}}"
                    fused[-1]["Outputs"] = layer["Outputs"]
                    continue
                layer = {**layer, "Name": f"{{ForeignNode[{name}]}}", "LayerType": "DLA", "TacticName": ""}
            fused.append(layer)
        layers = fused
    doc: dict[str, Any] = {"Layers": layers}
    if major >= 11:
        doc["I/O Tensors"] = [{"Name": n, "IOMode": "Input" if k < len(io["inputs"]) else "Output"} for k, n in enumerate(names)]
    else:
        doc["Bindings"] = names
    return json.dumps(doc)


# ------------------------------------------------------------------ fake CUDA: cuda-python and pycuda


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class FakeStream:
    """A ``cudaStream_t`` of cuda-bindings 12.x: ``int(stream)`` is its address."""

    def __init__(self, handle: int, flags: int = 0) -> None:
        self.handle, self.flags = handle, flags

    def __int__(self) -> int:
        return self.handle


class FakeStream13:
    """A ``cudaStream_t`` of cuda-bindings 13: no ``__int__``; ``utils.get_cuda_native_handle`` gives the address."""

    def __init__(self, handle: int, flags: int = 0) -> None:
        self.handle, self.flags = handle, flags


def _address(stream: Any) -> int:
    return stream.handle if isinstance(stream, (FakeStream, FakeStream13)) else int(stream)


class FakeCudart(types.ModuleType):
    """``cuda.bindings.runtime`` with real (ctypes) memory: device buffers, pinned buffers, streams.
    ``fail[name] = CudaError.x`` makes the next call of ``name`` return that error."""

    cudaStreamDefault, cudaStreamNonBlocking = 0, 1

    def __init__(self, gpu: bytes = b"Orin", cc: tuple[int, int] = (8, 7), stream_type: type = FakeStream) -> None:
        super().__init__("cuda.bindings.runtime")
        self.cudaError_t, self.cudaMemcpyKind = CudaError, MemcpyKind
        self.stream_type = stream_type
        self.devices_queried: list[int] = []
        self.gpu, self.cc = gpu, cc
        self.device: dict[int, Any] = {}
        self.pinned: dict[int, Any] = {}
        self.streams: dict[int, FakeStream] = {}
        self.copies: list[dict[str, Any]] = []
        self.log: list[str] = []
        self.fail: dict[str, CudaError] = {}
        self._next_stream = 0x1000
        self.events: dict[int, Any] = {}
        self.event_ms: list[float] = [0.25]  # what cudaEventElapsedTime answers, in turn (cycled)
        self.elapsed: list[float] = []  # every answer given, in order
        self.records: list[int] = []  # the stream of every cudaEventRecord

    def _e(self, name: str) -> CudaError:
        self.log.append(name)
        return self.fail.pop(name, CudaError.cudaSuccess)

    def cudaSetDevice(self, device: int) -> tuple:
        return (self._e("cudaSetDevice"),)

    def cudaGetDeviceProperties(self, device: int) -> tuple:
        self.devices_queried.append(int(device))
        props = types.SimpleNamespace(name=self.gpu + b"\x00" * 4, major=self.cc[0], minor=self.cc[1])
        return (self._e("cudaGetDeviceProperties"), props)

    def cudaRuntimeGetVersion(self) -> tuple:
        return (self._e("cudaRuntimeGetVersion"), 12020)  # CUDA 12.2, as JetPack 6's cuda-python links

    def cudaGetErrorName(self, error: Any) -> tuple:
        return (CudaError.cudaSuccess, CudaError(int(error)).name.encode())

    def _alloc(self, table: dict[int, Any], name: str, size: int) -> tuple:
        err = self._e(name)
        if err:
            return (err, None)
        buf = (ctypes.c_ubyte * int(size))()
        ptr = ctypes.addressof(buf)
        table[ptr] = buf
        return (err, ptr)

    def cudaMalloc(self, size: int) -> tuple:
        return self._alloc(self.device, "cudaMalloc", size)

    def cudaMallocHost(self, size: int) -> tuple:
        return self._alloc(self.pinned, "cudaMallocHost", size)

    def cudaHostAlloc(self, size: int, flags: int) -> tuple:
        return self._alloc(self.pinned, "cudaHostAlloc", size)

    def cudaFree(self, devPtr: int) -> tuple:
        err = self._e("cudaFree")
        if self.device.pop(int(devPtr), None) is None:
            return (CudaError.cudaErrorInvalidValue,)
        return (err,)

    def cudaFreeHost(self, ptr: int) -> tuple:
        err = self._e("cudaFreeHost")
        if self.pinned.pop(int(ptr), None) is None:
            return (CudaError.cudaErrorInvalidValue,)
        return (err,)

    def cudaStreamCreate(self) -> tuple:
        return self._stream_create("cudaStreamCreate", 0)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple:
        return self._stream_create("cudaStreamCreateWithFlags", int(flags))

    def _stream_create(self, name: str, flags: int) -> tuple:
        err = self._e(name)
        self._next_stream += 1
        s = self.stream_type(self._next_stream, flags)
        if not err:
            self.streams[s.handle] = s
        return (err, s if not err else None)

    def cudaStreamDestroy(self, stream: Any) -> tuple:
        err = self._e("cudaStreamDestroy")
        if self.streams.pop(_address(stream), None) is None:
            return (CudaError.cudaErrorInvalidValue,)
        return (err,)

    def _inside(self, table: dict[int, Any], ptr: int, n: int) -> bool:
        return any(p <= ptr and ptr + n <= p + ctypes.sizeof(b) for p, b in table.items())

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:
        err = self._e("cudaMemcpyAsync")
        if err:
            return (err,)
        host, dev = (src, dst) if kind == MemcpyKind.cudaMemcpyHostToDevice else (dst, src)
        if not self._inside(self.device, int(dev), count) or _address(stream) not in self.streams:
            return (CudaError.cudaErrorInvalidValue,)
        self.copies.append({"kind": MemcpyKind(kind).name, "pinned": self._inside(self.pinned, int(host), count),
                            "stream": _address(stream), "bytes": int(count)})
        ctypes.memmove(int(dst), int(src), int(count))
        return (err,)

    def cudaStreamSynchronize(self, stream: Any) -> tuple:
        err = self._e("cudaStreamSynchronize")
        return (err if _address(stream) in self.streams else CudaError.cudaErrorInvalidValue,)

    # CUDA events: recorded on open streams; the elapsed time is the next of ``event_ms``
    def cudaEventCreate(self) -> tuple:
        err = self._e("cudaEventCreate")
        self._next_stream += 1
        ev = self.stream_type(self._next_stream, 0)
        if not err:
            self.events[ev.handle] = ev
        return (err, ev if not err else None)

    def cudaEventRecord(self, event: Any, stream: Any) -> tuple:
        err = self._e("cudaEventRecord")
        if _address(event) not in self.events or _address(stream) not in self.streams:
            return (CudaError.cudaErrorInvalidValue,)
        self.records.append(_address(stream))
        return (err,)

    def cudaEventSynchronize(self, event: Any) -> tuple:
        err = self._e("cudaEventSynchronize")
        return (err if _address(event) in self.events else CudaError.cudaErrorInvalidValue,)

    def cudaEventElapsedTime(self, start: Any, end: Any) -> tuple:
        err = self._e("cudaEventElapsedTime")
        if _address(start) not in self.events or _address(end) not in self.events:
            return (CudaError.cudaErrorInvalidValue, 0.0)
        ms = self.event_ms[len(self.elapsed) % len(self.event_ms)]
        self.elapsed.append(ms)
        return (err, ms)

    def cudaEventDestroy(self, event: Any) -> tuple:
        err = self._e("cudaEventDestroy")
        if self.events.pop(_address(event), None) is None:
            return (CudaError.cudaErrorInvalidValue,)
        return (err,)


class FakePycudaDriver(types.ModuleType):
    """``pycuda.driver``: primary context push/pop, allocations, pagelocked arrays, streams."""

    class Error(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pycuda.driver")
        self.stack: list[str] = []
        self.log: list[str] = []
        self.live: dict[str, int] = {"device": 0, "pinned": 0}
        self.copies: list[dict[str, Any]] = []
        self.stream_flags: list[int] = []
        drv = self

        class Context:
            def push(self) -> None:
                drv.stack.append("primary")

            @staticmethod
            def pop() -> None:
                drv.stack.pop()

        class Device:
            def __init__(self, n: int) -> None:
                self.n = n

            def retain_primary_context(self) -> Any:
                return Context()

        class DeviceAllocation:
            def __init__(self, n: int) -> None:
                self.buf = (ctypes.c_ubyte * n)()
                drv.live["device"] += 1

            def __int__(self) -> int:
                return ctypes.addressof(self.buf)

            def free(self) -> None:
                drv.live["device"] -= 1

        class Stream:
            _n = 0

            def __init__(self, flags: int = 0) -> None:
                Stream._n += 1
                self.handle, self.flags = 0x2000 + Stream._n, flags
                drv.stream_flags.append(flags)

            def synchronize(self) -> None:
                drv.log.append("synchronize")

        class Event:
            def record(self, stream: Any = None) -> None:
                drv.log.append("Event.record")

            def synchronize(self) -> None:
                drv.log.append("Event.synchronize")

            def time_since(self, start: Any) -> float:
                return drv.event_ms

        self.event_ms = 0.5  # what every Event.time_since answers
        self.Device, self.Stream, self.Event, self._alloc = Device, Stream, Event, DeviceAllocation

    def init(self) -> None:
        self.log.append("init")

    def mem_alloc(self, n: int) -> Any:
        return self._alloc(n)

    def pagelocked_empty(self, shape: Any, dtype: Any) -> np.ndarray:
        drv = self
        count = int(np.prod(shape))
        nbytes = max(count * np.dtype(dtype).itemsize, 1)

        class HostAllocation(ctypes.c_ubyte * nbytes):  # type: ignore[misc]
            def free(self) -> None:
                drv.live["pinned"] -= 1

        alloc = HostAllocation()
        self.live["pinned"] += 1
        arr = np.frombuffer(alloc, dtype=dtype, count=count)
        self.pinned_ids = getattr(self, "pinned_ids", set()) | {arr.__array_interface__["data"][0]}
        return arr

    def memcpy_htod_async(self, dest: int, src: np.ndarray, stream: Any) -> None:
        self.copies.append({"kind": "htod", "pinned": src.__array_interface__["data"][0] in self.pinned_ids})
        ctypes.memmove(int(dest), src.ctypes.data, src.nbytes)

    def memcpy_dtoh_async(self, dest: np.ndarray, src: int, stream: Any) -> None:
        self.copies.append({"kind": "dtoh", "pinned": dest.__array_interface__["data"][0] in self.pinned_ids})
        ctypes.memmove(dest.ctypes.data, int(src), dest.nbytes)


# ------------------------------------------------------------------ installing the doubles

_PARSED: dict[Path, dict[str, StubClass]] = {}


def stubs() -> dict[str, StubClass]:
    f = stub_file_or_skip()
    if f not in _PARSED:
        _PARSED[f] = parse_stubs(f)
    return _PARSED[f]


def make_double(version: str = "10.13.0.35") -> TrtDouble:
    d = TrtDouble(stubs(), version)
    install_behaviour(d)
    return d


def install(monkeypatch: pytest.MonkeyPatch, version: str = "10.13.0.35", gpu: bytes = b"Orin",
            cc: tuple[int, int] = (8, 7), bindings13: bool = False) -> tuple[TrtDouble, FakeCudart]:
    """``tensorrt`` -> the double, ``cuda.bindings.runtime`` -> a FakeCudart, ``pycuda`` -> absent.

    ``bindings13``: streams behave as in cuda-bindings 13 (no ``int()``; ``cuda.bindings.utils.
    get_cuda_native_handle`` gives their address); otherwise ``cuda.bindings.utils`` is absent (12.x)."""
    d = make_double(version)
    rt = FakeCudart(gpu, cc, stream_type=FakeStream13 if bindings13 else FakeStream)
    cuda_pkg, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    bindings.runtime = rt  # type: ignore[attr-defined]
    cuda_pkg.bindings = bindings  # type: ignore[attr-defined]
    cuda_pkg.__path__ = []  # type: ignore[attr-defined]
    bindings.__path__ = []  # type: ignore[attr-defined]
    utils: types.ModuleType | None = None
    if bindings13:
        utils = types.ModuleType("cuda.bindings.utils")

        def get_cuda_native_handle(obj: Any) -> int:
            if not isinstance(obj, FakeStream13):
                raise TypeError("Unknown type: " + str(type(obj)))
            return obj.handle

        utils.get_cuda_native_handle = get_cuda_native_handle  # type: ignore[attr-defined]
        bindings.utils = utils  # type: ignore[attr-defined]
    for name, mod in (("tensorrt", d), ("cuda", cuda_pkg), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt),
                      ("cuda.bindings.utils", utils), ("pycuda", None), ("pycuda.driver", None)):
        monkeypatch.setitem(sys.modules, name, mod)
    fake_board(monkeypatch, None)  # not a Jetson, no system libcudart: whatever machine runs the tests
    import gc

    gc.collect()  # ONNX Runtime sessions other tests dropped: none alive makes the acceptance check fork
    return d, rt


def fake_board(monkeypatch: pytest.MonkeyPatch, root: Path | None, jetson: str | None = None, cuda: str | None = None,
               libcudart: Path | None = None) -> None:
    """Point ``deploy.board`` and the libcudart search at a made-up machine under ``root`` (None: nothing
    there). ``jetson``: "release" (/etc/nv_tegra_release R36.4), "devicetree" (compatible nvidia,tegra234
    only), "kernel" (uname -r ...-tegra only) or None; ``cuda``: /usr/local/cuda/version.json's version;
    ``libcudart``: the library $RDD_CUDART names (None: a path that does not exist)."""
    from rdd_edge.deploy import board

    base = root if root is not None else Path("/nonexistent-rdd-edge-board")
    if root is not None:
        (base / "etc").mkdir(parents=True, exist_ok=True)
        (base / "proc").mkdir(exist_ok=True)
        (base / "cuda").mkdir(exist_ok=True)
        if jetson == "release":
            (base / "etc" / "nv_tegra_release").write_text(
                "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
        if jetson == "devicetree":
            (base / "proc" / "compatible").write_bytes(b"nvidia,p3737-0000+p3701-0005\0nvidia,tegra234\0")
        if cuda:
            (base / "cuda" / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": cuda}}))
    monkeypatch.setattr(board, "TEGRA_RELEASE", base / "etc" / "nv_tegra_release")
    monkeypatch.setattr(board, "DEVICE_TREE_COMPATIBLE", base / "proc" / "compatible")
    monkeypatch.setattr(board, "CUDA_HOME", base / "cuda")
    monkeypatch.setattr(board, "_kernel_release", lambda: "5.15.148-tegra" if jetson == "kernel" else "6.8.0-generic")
    monkeypatch.setenv("RDD_CUDART", str(libcudart or base / "libcudart.so.12"))


def build_cudart_standin(folder: Path) -> Path:
    """tests/cudart_standin.c compiled into ``folder/libcudart.so.12`` (skips without a C compiler)."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the libcudart stand-in")
    out = folder / "libcudart.so.12"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(ROOT / "tests" / "cudart_standin.c")], check=True)
    return out


def install_pycuda(monkeypatch: pytest.MonkeyPatch) -> FakePycudaDriver:
    drv = FakePycudaDriver()
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv  # type: ignore[attr-defined]
    pkg.__path__ = []  # type: ignore[attr-defined]
    tools = types.ModuleType("pycuda.tools")
    tools.clear_context_caches = lambda: drv.log.append("clear_context_caches")  # type: ignore[attr-defined]
    for name, mod in (("pycuda", pkg), ("pycuda.driver", drv), ("pycuda.tools", tools)):
        monkeypatch.setitem(sys.modules, name, mod)
    return drv


# ------------------------------------------------------------------ a tiny real export folder (no torch)


def tiny_fp32_onnx(path: Path, size: tuple[int, int] = (16, 24), classes: int = 4, seed: int = 0,
                   batch: int | str = "batch") -> Path:
    """images (batch, 3, H, W) -> Conv3x3 -> Relu -> Conv1x1 -> logits, ArgMax -> labels (opset 18)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (classes, 8, 1, 1)).astype(np.float32)
    b1, b2 = rng.normal(0, 0.1, 8).astype(np.float32), rng.normal(0, 0.1, classes).astype(np.float32)
    h, w = size
    nodes = [helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["logits"], name="classifier"),
             helper.make_node("ArgMax", ["logits"], ["labels"], name="argmax", axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes, h, w]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, h, w])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


EXPORT_SIZE = (16, 24)  # make_export's default: the session export of conftest.trt_export_src


def make_export(folder: Path, size: tuple[int, int] = EXPORT_SIZE) -> Path:
    """model.onnx, model.fp16.onnx, model.int8.onnx (FP16 float + Q/DQ), model.int8-cpu.onnx and a manifest."""
    from deploy_utils import write_manifest

    from rdd_edge.export.fp16 import export_fp16
    from rdd_edge.export.int8 import export_int8

    src = tiny_fp32_onnx(folder / "model.onnx", size)
    export_fp16(src, folder / "model.fp16.onnx")
    items = [(f"rand{i}", (lambda i=i: np.random.default_rng(100 + i).integers(0, 256, (20, 30, 3), dtype=np.uint8)))
             for i in range(8)]
    info = export_int8(src, folder, items, size=size)
    arts = {"onnx": {"file": "model.onnx", "precision": "fp32"}, "fp16": {"file": "model.fp16.onnx", "precision": "fp16"},
            "int8": {"file": "model.int8.onnx", "precision": "int8", "trt_float": info.get("trt_float", "fp32")},
            "int8-cpu": {"file": "model.int8-cpu.onnx", "precision": "int8"}}
    write_manifest(folder, size, output="both", artifacts=arts)
    return folder


def copied_export(export_src: Path, dst: Path) -> Path:
    """A fresh copy of a module-scoped export folder, for a test that changes it."""
    import shutil

    shutil.copytree(export_src, dst)
    return dst
