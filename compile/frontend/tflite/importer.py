"""A TFLite graph into Relax, operator by operator through the converter registry, with every
4-D activation held channels-first.

TFLite is NHWC; QATIE's integer kernels (`compile.backend.packed_conv`) and the blocked layout
between them start from NCHW convs. Each imported value therefore carries `perm`, the logical
(TFLite) axis each of its axes holds: a conv's output is stored NCHW for a logical NHWC tensor
(`perm` = (0, 3, 1, 2)). Converters read operands in the order they need (`Importer.value`),
and a TRANSPOSE moves no data, it only relabels the axes (the paper's models transpose to NCHW
for their channel concats, and back). The graph's outputs are returned in TFLite's layout.

`to_relax` can import any subset of the operators, with the tensors they read from outside
the subset as parameters: a single operator fed with LiteRT's own intermediate tensors is how
each converter is checked against the reference kernels (`compile.frontend.tflite.check`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from compile.frontend.tflite.graph import Graph, Operator, Tensor
from qatie.errors import QatieError, last_line

NCHW = (0, 3, 1, 2)  # an NHWC tensor stored channels-first


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


@dataclass(frozen=True)
class Value:
    """An imported tensor: `expr`'s axis j is the logical axis `perm[j]`."""

    expr: relax.Expr
    perm: tuple[int, ...]


class Importer:
    """The state of one import: the block builder and the value of every tensor so far."""

    def __init__(self, graph: Graph, builder: relax.BlockBuilder) -> None:
        self.graph = graph
        self.builder = builder
        self.values: dict[int, Value] = {}

    def tensor(self, index: int) -> Tensor:
        return self.graph.tensors[index]

    def fail(self, op: Operator, reason: str) -> QatieError:
        return QatieError(f"{self.graph.path}: {op.describe()}: {reason}")

    def constant(self, op: Operator, index: int) -> np.ndarray:
        data = self.tensor(index).data
        if data is None:
            raise self.fail(op, f"input '{self.tensor(index).name}' must be a constant")
        return data

    def value(self, index: int, perm: tuple[int, ...] | None = None, rank: int | None = None) -> relax.Expr:
        """Tensor `index` with its axes in `perm` (default: as stored), first broadcast to `rank`
        logical axes the numpy way (leading ones) when it has fewer."""
        tensor = self.tensor(index)
        rank = rank or len(tensor.shape)
        if tensor.data is not None:
            data = self.array(index, perm, rank)
            return relax.const(data.item() if data.ndim == 0 else data, tensor.dtype)
        held = self.values[index]
        expr, stored = held.expr, held.perm
        if len(stored) < rank:  # broadcast a lower-rank value: logical reshape first
            expr = self.builder.emit(relax.op.permute_dims(expr, [stored.index(a) for a in identity(len(stored))]))
            shape = (1,) * (rank - len(stored)) + tensor.shape
            expr, stored = self.builder.emit(relax.op.reshape(expr, shape)), identity(rank)
        perm = perm or stored
        if perm != stored:
            expr = self.builder.emit(relax.op.permute_dims(expr, [stored.index(a) for a in perm]))
        return expr

    def array(self, index: int, perm: tuple[int, ...] | None, rank: int) -> np.ndarray:
        """Constant tensor `index` broadcast to `rank` logical axes, its axes in `perm`."""
        data = self.tensor(index).data
        data = data.reshape((1,) * (rank - data.ndim) + data.shape)
        return np.ascontiguousarray(data.transpose(perm or identity(rank)))

    def perm(self, index: int) -> tuple[int, ...]:
        """How tensor `index` is stored (constants: as in the file)."""
        held = self.values.get(index)
        return held.perm if held is not None else identity(len(self.tensor(index).shape))

    def set(self, index: int, expr: relax.Expr, perm: tuple[int, ...] | None = None) -> None:
        self.values[index] = Value(self.builder.emit(expr), perm or identity(len(self.tensor(index).shape)))

    def channel_shape(self, perm: tuple[int, ...], channels: int) -> tuple[int, ...]:
        """The shape that broadcasts a per-channel constant (logical last axis) over `perm`."""
        shape = [1] * len(perm)
        shape[perm.index(len(perm) - 1)] = channels
        return tuple(shape)


def to_relax(graph: Graph, operators: tuple[int, ...] | None = None, outputs: tuple[int, ...] | None = None):
    """A Relax IRModule computing `outputs` (default: the graph's) from the tensors that
    `operators` (default: all) read without making them, each a parameter, in TFLite's layout."""
    from compile.frontend.tflite.converters import CONVERTERS

    ops = [graph.operators[k] for k in (operators if operators is not None else range(len(graph.operators)))]
    made = {i for op in ops for i in op.outputs}
    inputs = graph.inputs if operators is None else tuple(dict.fromkeys(
        i for op in ops for i in op.inputs if i >= 0 and i not in made and graph.tensors[i].data is None))
    outputs = outputs if outputs is not None else (graph.outputs if operators is None else ops[-1].outputs)
    builder = relax.BlockBuilder()
    params = [relax.Var(graph.tensors[i].name.replace("/", "_") or f"t{i}",
                        relax.TensorType(list(graph.tensors[i].shape), graph.tensors[i].dtype)) for i in inputs]
    importer = Importer(graph, builder)
    with builder.function("main", params, {"num_input": len(params)}):
        with builder.dataflow():
            for index, param in zip(inputs, params, strict=True):
                importer.values[index] = Value(param, identity(len(graph.tensors[index].shape)))
            for op in ops:
                try:
                    CONVERTERS[op.code](importer, op)
                except QatieError:
                    raise
                except Exception as exc:  # TVM's shape checks and numpy raise many types
                    raise importer.fail(op, f"cannot be imported: {last_line(exc)}") from None
            results = [importer.value(i, identity(len(graph.tensors[i].shape))) for i in outputs]
            out = builder.emit_output(results[0] if len(results) == 1 else relax.Tuple(results))
        builder.emit_func_output(out)
    return builder.finalize()
