"""Fold the exported graph's input normalisation into the first convolution (for the INT8 model).

The export starts `Cast(uint8→float) → [Transpose] → Mul(1/std) → Add(-mean/std) → Conv`. In FP32 that costs
nothing (ORT runs the broadcast over [1, 3, 1, 1] at memory speed), but in a quantised model ORT's NHWC transformer
moves the Mul / Add behind the Transpose, where the broadcast over the last axis of size 3 is slow: at 512x1024 the two
took ~18 ms of a ~70 ms Fast-SCNN INT8 run (benchmarks/README.md, INT8 section). Folded, the first convolution reads
the raw 0..255 pixels, which 8-bit activations then represent exactly (scale 1), and the Mul / Add are gone.

    y = conv(x * s + a, W, B) = conv(x, W * s, B + sum_{c,kh,kw} W[:, c] * a[c])

exactly, except where the convolution pads: it pads the normalised input with 0, a pixel of the mean colour, and
a folded conv that kept its padding would pad the raw input with 0, black (BiSeNet-R18's 7x7 first conv lost 1.35
CamVid val mIoU to that in FP32). So the padding moves to a `Pad` of the uint8 input in front of the graph, with the
mean colour as one grey level (ONNX pads with one value for every channel): the border then differs from the
original by the channels' spread around their mean (~10 levels of 255 for ImageNet's mean) instead of by the whole
mean (~115). `quantize_int8` reports the mIoU and the argmax agreement of the result, so the cost is measured.
"""

from __future__ import annotations

import numpy as np

_PASS_THROUGH = ("Cast", "Transpose")


def fold_input_normalization(proto) -> list[str]:
    """Fold `Mul(const) → Add(const)` between the graph input and its Conv consumers into those convs' weights, in
    place. Returns the names of the folded convolutions ([] where the graph does not have that shape)."""
    from onnx import TensorProto, numpy_helper

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
    chain = []
    while node is not None and node.op_type in _PASS_THROUGH:
        chain.append(node)
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
    pads = {tuple(_ints(c, "pads")) for c in convs}
    uint8_input = graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    # every conv that reads the input pads alike (BiSeNet: its spatial and context paths' 7x7 convs): one Pad
    if len(pads) == 1 and uint8_input and chain and chain[0].op_type == "Cast" and any(next(iter(pads))):
        _pad_input_with_grey(graph, chain, convs, float(np.mean(-a / s)))
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
    auto_pad = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
    return (
        conv.op_type == "Conv"
        and group == 1
        and auto_pad in (b"NOTSET", b"VALID")
        and len(conv.input) >= 2
        and conv.input[1] in init
    )


def _ints(node, name: str) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), [])


def _pad_input_with_grey(graph, chain, convs, grey: float) -> None:
    """Move the convs' (common) padding to a Pad of the uint8 graph input (value `grey`, the mean colour's level),
    in front of the Cast: the Pad copies uint8 pixels, the cheapest place for it. The input is NHWC when the chain
    has a Transpose (its perm says where H and W are), NCHW otherwise."""
    from onnx import helper, numpy_helper

    top, left, bottom, right = _ints(convs[0], "pads")
    perm = next((_ints(n, "perm") for n in chain if n.op_type == "Transpose"), [0, 1, 2, 3])
    begin, end = [0] * 4, [0] * 4
    begin[perm[2]], begin[perm[3]], end[perm[2]], end[perm[3]] = top, left, bottom, right
    source = graph.input[0].name
    padded = f"{source}_padded"
    grey_level = int(np.clip(round(grey), 0, 255))
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(begin + end, np.int64), f"{padded}_pads"),
            numpy_helper.from_array(np.array(grey_level, np.uint8), f"{padded}_value"),
        ]
    )
    pad = helper.make_node("Pad", [source, f"{padded}_pads", f"{padded}_value"], [padded], name=f"{padded}_pad")
    graph.node.insert(list(graph.node).index(chain[0]), pad)
    chain[0].input[0] = padded
    for conv in convs:
        for attribute in conv.attribute:
            if attribute.name == "pads":
                del attribute.ints[:]
                attribute.ints.extend([0, 0, 0, 0])
    # the chain's tensors are larger now: drop their recorded shapes (ORT would warn on every run and re-infers them)
    stale = {n.output[0] for n in chain}
    for info in [v for v in graph.value_info if v.name in stale]:
        graph.value_info.remove(info)


def _drop_unused_initializers(graph) -> None:
    used = {t for node in graph.node for t in node.input} | {o.name for o in graph.output}
    for item in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(item)
