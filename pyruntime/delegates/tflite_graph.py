"""One W8A8 linear (SPEC 5.1) as an int8 TFLite model of static shape ``[rows, in] -> [rows, out]``,
written without TensorFlow through the flatbuffer schema module that ai-edge-litert ships:

    x (float32) -QUANTIZE(s_x, zp 0)-> int8 -FULLY_CONNECTED(W~ int8 [out, in], s_w)-> y_q int8 (s_y)

TFLite's FULLY_CONNECTED weight layout is [out, in], the runtime's own. Requantization inside the op
uses a fixed-point multiplier, so an output on a rounding tie may land one step from the float
definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TFLITE_IDENTIFIER = b"TFL3"


def int8_linear(graph: dict[str, Any]) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    rows, k, n = int(graph["rows"]), int(graph["in_features"]), int(graph["out_features"])
    weight = np.ascontiguousarray(np.asarray(graph["weight"], dtype=np.int8).reshape(n, k))
    weight_scales = np.asarray(graph["weight_scales"], dtype=np.float32).reshape(n)
    if np.all(weight_scales == weight_scales[0]):
        weight_scales = weight_scales[:1]  # per tensor

    def quant(scale: Any, axis: int = 0) -> Any:
        q = fb.QuantizationParametersT()
        q.scale = [float(v) for v in np.asarray(scale, dtype=np.float32).reshape(-1)]
        q.zeroPoint = [0] * len(q.scale)
        q.quantizedDimension = axis  # weights [out, in]: per output channel when several scales
        return q

    def tensor(name: str, shape: list[int], ttype: int, buffer: int, q: Any = None) -> Any:
        t = fb.TensorT()
        t.name = name.encode()
        t.shape = shape
        t.type = ttype
        t.buffer = buffer
        t.quantization = q
        return t

    buffers = [fb.BufferT() for _ in range(4)]  # 0: the empty sentinel; 2: the weight
    buffers[2].data = weight.reshape(-1).view(np.uint8).tolist()
    sg = fb.SubGraphT()
    sg.name = str(graph["name"]).encode()
    sg.tensors = [
        tensor("x", [rows, k], fb.TensorType.FLOAT32, 1),
        tensor("w_q", [n, k], fb.TensorType.INT8, 2, quant(weight_scales)),
        tensor("x_q", [rows, k], fb.TensorType.INT8, 0, quant(graph["input_scale"])),
        tensor("y_q", [rows, n], fb.TensorType.INT8, 3, quant(graph["output_scale"])),
    ]
    sg.inputs, sg.outputs = [0], [3]
    quantize = fb.OperatorT()
    quantize.opcodeIndex, quantize.inputs, quantize.outputs = 0, [0], [2]
    quantize.builtinOptionsType = fb.BuiltinOptions.QuantizeOptions
    quantize.builtinOptions = fb.QuantizeOptionsT()
    fc = fb.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 1, [2, 1, -1], [3]  # no bias
    fc.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = fb.FullyConnectedOptionsT()
    sg.operators = [quantize, fc]
    codes = []
    for op in (fb.BuiltinOperator.QUANTIZE, fb.BuiltinOperator.FULLY_CONNECTED):
        c = fb.OperatorCodeT()
        c.builtinCode = op
        c.deprecatedBuiltinCode = min(op, 127)
        c.version = 1 if op == fb.BuiltinOperator.QUANTIZE else 4
        codes.append(c)
    model = fb.ModelT()
    model.version = 3
    model.operatorCodes = codes
    model.subgraphs = [sg]
    model.buffers = buffers
    model.description = b"pyruntime W8A8 linear"
    b = flatbuffers.Builder(1024 + weight.size)
    b.Finish(model.Pack(b), file_identifier=TFLITE_IDENTIFIER)
    return bytes(b.Output())
