"""The metadata digest in the graph (onnx and numpy only: usable without TensorFlow).

`python -m export.metadata_binding MODEL.onnx` binds an exported model's current metadata, for
a model exported before the digest existed (its graph and metadata otherwise untouched)."""

from __future__ import annotations

import sys

import numpy as np
import onnx

from edge_infer.metadata import METADATA_DIGEST, metadata_digest


def bind_metadata(proto: onnx.ModelProto) -> None:
    """Put the digest of the model's metadata into its graph, as a constant output
    (edge_infer.metadata.METADATA_DIGEST): the runtime refuses a file whose metadata was
    edited afterwards (classes reordered, codes or thresholds changed), since the graph's
    answers only mean what the metadata it was exported with says."""
    props = {p.key: p.value for p in proto.metadata_props}
    digest = np.frombuffer(metadata_digest(props), np.uint8)
    graph = proto.graph
    kept = [n for n in graph.node if METADATA_DIGEST not in n.output]
    del graph.node[:]
    graph.node.extend(kept)
    outputs = [o for o in graph.output if o.name != METADATA_DIGEST]
    del graph.output[:]
    graph.output.extend(outputs)
    graph.node.append(
        onnx.helper.make_node(
            "Constant",
            [],
            [METADATA_DIGEST],
            value=onnx.numpy_helper.from_array(digest, name=f"{METADATA_DIGEST}_value"),
        )
    )
    graph.output.append(
        onnx.helper.make_tensor_value_info(METADATA_DIGEST, onnx.TensorProto.UINT8, [32])
    )


def main(argv: list[str] | None = None) -> None:
    for path in argv if argv is not None else sys.argv[1:]:
        proto = onnx.load(path)
        bind_metadata(proto)
        onnx.save(proto, path)
        print(f"{path}: metadata digest bound into the graph")


if __name__ == "__main__":
    main()
