"""One W8A8 linear (SPEC 5.1) as an ONNX model of static shape ``[rows, in] -> [rows, out]``, in two
forms of the same arithmetic:

``qdq`` (what NPU toolchains such as QNN take; they fuse DQ -> MatMul -> Q into one integer op)::

    x -QuantizeLinear(s_x)-> int8 -DequantizeLinear-> MatMul <-DequantizeLinear(s_w)- W~ (int8)
      -> QuantizeLinear(s_y) -> y_q (int8)

``integer`` (exact on any backend: onnxruntime's CPU provider runs the QDQ form above as a float
MatMul, which lands on the other side of a rounding tie now and then)::

    x -QuantizeLinear(s_x)-> int8 -MatMulInteger(W~)-> int32 -Cast-> float -Mul(s_x s_w)
      -QuantizeLinear(s_y)-> y_q (int8)

The weight is stored transposed ([in, out]) as MatMul wants it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 19


FORMATS = ("qdq", "integer")


def qdq_linear(graph: dict[str, Any], form: str = "qdq") -> bytes:
    """Serialized ONNX model for one graph dict (name, rows, in_features, out_features, weight
    [out, in] int8, weight_scales [out], input_scale, output_scale). Equal weight scales are written as
    one per-tensor scale; otherwise the weight's DequantizeLinear is per axis (output channels)."""
    if form not in FORMATS:
        raise ValueError(f"unknown ONNX graph form {form!r} (qdq, integer)")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows, k, n = int(graph["rows"]), int(graph["in_features"]), int(graph["out_features"])
    weight = np.asarray(graph["weight"], dtype=np.int8).reshape(n, k)

    def scalar(value: Any, dtype: Any, name: str) -> Any:
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    s_w = np.asarray(graph["weight_scales"], dtype=np.float32).reshape(n)
    per_tensor = bool(np.all(s_w == s_w[0]))
    init = [
        scalar(graph["input_scale"], np.float32, "s_x"),
        scalar(0, np.int8, "zp_x"),
        numpy_helper.from_array(np.ascontiguousarray(weight.T), "w_q"),
        scalar(s_w[0], np.float32, "s_w") if per_tensor else numpy_helper.from_array(s_w, "s_w"),
        scalar(0, np.int8, "zp_w") if per_tensor else numpy_helper.from_array(np.zeros(n, np.int8), "zp_w"),
        scalar(graph["output_scale"], np.float32, "s_y"),
        scalar(0, np.int8, "zp_y"),
    ]
    if form == "qdq":
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s_x", "zp_x"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "s_x", "zp_x"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "s_w", "zp_w"], ["w_dq"], axis=1),
            helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"]),
            helper.make_node("QuantizeLinear", ["y", "s_y", "zp_y"], ["y_q"]),
        ]
    else:
        init.append(numpy_helper.from_array((np.float32(graph["input_scale"]) * s_w).astype(np.float32), "s_xw"))
        init = [t for t in init if t.name not in ("s_w", "zp_w")] + [scalar(0, np.int8, "zp_w")]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s_x", "zp_x"], ["x_q"]),
            helper.make_node("MatMulInteger", ["x_q", "w_q", "zp_x", "zp_w"], ["acc"]),
            helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["acc_f", "s_xw"], ["y"]),
            helper.make_node("QuantizeLinear", ["y", "s_y", "zp_y"], ["y_q"]),
        ]
    g = helper.make_graph(
        nodes,
        str(graph["name"]),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])],
        [helper.make_tensor_value_info("y_q", TensorProto.INT8, [rows, n])],
        init,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pyruntime")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
