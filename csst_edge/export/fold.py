"""Fold the exported graph's input normalisation into the first convolution (for the INT8 model).

The export starts `Cast(uint8→float) → [Transpose] → Mul(1/std) → Add(-mean/std) → Conv`. In FP32 that costs
nothing (ORT runs the broadcast over [1, 3, 1, 1] at memory speed), but in a quantised model ORT's NHWC transformer
moves the Mul / Add behind the Transpose, where the broadcast over the last axis of size 3 is slow: at 512x1024 the two
took ~18 ms of a ~70 ms Fast-SCNN INT8 run (benchmarks/README.md, INT8 section). Folded, the first convolution reads
the raw 0..255 pixels, which 8-bit activations then represent exactly (scale 1), and the Mul / Add are gone.

    y = conv(x * s + a, W, B) = conv(x, W * s, B + sum_{c,kh,kw} W[:, c] * a[c])

exactly, except where the convolution pads: it pads the normalised input with 0 (a pixel of the mean colour), the
folded one pads the raw input with 0 (black). Only the first layer's border pixels see it; `quantize_int8` reports
the mIoU and the argmax agreement of the result, so the cost is measured, not assumed.
"""

from __future__ import annotations

import numpy as np

_PASS_THROUGH = ("Cast", "Transpose")


def fold_input_normalization(proto) -> list[str]:
    """Fold `Mul(const) → Add(const)` between the graph input and its Conv consumers into those convs' weights, in
    place. Returns the names of the folded convolutions ([] where the graph does not have that shape)."""
    from onnx import numpy_helper

    graph = proto.graph
    init = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)

    def only_consumer(tensor: str):
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None

    def const(node, index: int):
        name = node.input[index]
        return numpy_helper.to_array(init[name]).astype(np.float64) if name in init else None

    tensor = graph.input[0].name
    node = only_consumer(tensor)
    while node is not None and node.op_type in _PASS_THROUGH:
        tensor = node.output[0]
        node = only_consumer(tensor)
    if node is None or node.op_type != "Mul" or node.input[0] != tensor:
        return []
    mul, add = node, only_consumer(node.output[0])
    if add is None or add.op_type != "Add" or add.input[0] != mul.output[0]:
        return []
    scale, shift = const(mul, 1), const(add, 1)
    if scale is None or shift is None or scale.size not in (1, 3) or shift.size not in (1, 3):
        return []
    convs = consumers.get(add.output[0], [])
    if not convs or any(not _foldable(c, init) for c in convs):
        return []
    s, a = np.broadcast_to(scale.ravel(), (3,)), np.broadcast_to(shift.ravel(), (3,))
    weights = [numpy_helper.to_array(init[c.input[1]]).astype(np.float64) for c in convs]
    if any(w.ndim != 4 or w.shape[1] != 3 for w in weights):
        return []
    for conv, weight in zip(convs, weights, strict=True):
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = numpy_helper.to_array(init[conv.input[2]]).astype(np.float64) if has_bias else 0.0
        folded = {
            f"{conv.name}_folded_W": weight * s[None, :, None, None],
            f"{conv.name}_folded_B": bias + (weight * a[None, :, None, None]).sum(axis=(1, 2, 3)),
        }
        for name, value in folded.items():
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        del conv.input[:]
        conv.input.extend([mul.input[0], *folded])
    graph.node.remove(mul)
    graph.node.remove(add)
    _drop_unused_initializers(graph)
    return [c.name for c in convs]


def _foldable(conv, init) -> bool:
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    return conv.op_type == "Conv" and group == 1 and len(conv.input) >= 2 and conv.input[1] in init


def _drop_unused_initializers(graph) -> None:
    used = {t for node in graph.node for t in node.input} | {o.name for o in graph.output}
    for item in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(item)
