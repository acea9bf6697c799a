"""Valid seed calls for the fuzz suite (tests/test_fuzz.py): one small valid call per op, as
``(arrays, params)`` with float64 arrays, for the ops that have no kernel spec Case yet.

An op with a forward :class:`cvkernels.spec.Case` uses its first Case instead (so a kernel
family added later is fuzzed with its own shapes, with no edit here); a seed here is only the
fallback for ops that run on the ``cpu`` reference alone. ``test_every_op_is_fuzzed`` fails
for an op of ``functional``/``ops`` that has neither.
"""
from __future__ import annotations

import numpy as np


def _n(rng, *shape):
    return rng.standard_normal(shape)


def _boxes(rng, n):
    xy = rng.uniform(0, 6, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.5, 4, (n, 2))], axis=1)


SEEDS = {
    "matmul": lambda r: ({"input": _n(r, 3, 4), "other": _n(r, 4, 5)}, {}),
    "linear": lambda r: ({"input": _n(r, 2, 4), "weight": _n(r, 3, 4), "bias": _n(r, 3)}, {}),
    "softmax": lambda r: ({"input": _n(r, 3, 5)}, {"dim": -1}),
    "log_softmax": lambda r: ({"input": _n(r, 3, 5)}, {"dim": -1}),
    "conv2d": lambda r: ({"input": _n(r, 1, 2, 5, 5), "weight": _n(r, 3, 2, 3, 3),
                          "bias": _n(r, 3)}, {"stride": 1, "padding": 1}),
    "conv_transpose2d": lambda r: ({"input": _n(r, 1, 2, 4, 4), "weight": _n(r, 2, 3, 3, 3),
                                    "bias": _n(r, 3)}, {"stride": 2}),
    "max_pool2d": lambda r: ({"input": _n(r, 1, 2, 6, 6)}, {"kernel_size": 2}),
    "avg_pool2d": lambda r: ({"input": _n(r, 1, 2, 6, 6)}, {"kernel_size": 3, "stride": 2}),
    "adaptive_avg_pool2d": lambda r: ({"input": _n(r, 1, 2, 7, 5)}, {"output_size": 3}),
    "batch_norm": lambda r: ({"input": _n(r, 4, 3, 2, 2), "running_mean": np.zeros(3),
                              "running_var": np.ones(3), "weight": _n(r, 3), "bias": _n(r, 3)},
                             {"training": True}),
    "layer_norm": lambda r: ({"input": _n(r, 2, 3, 4), "weight": _n(r, 4), "bias": _n(r, 4)},
                             {"normalized_shape": (4,)}),
    "relu": lambda r: ({"input": _n(r, 3, 4)}, {}),
    "leaky_relu": lambda r: ({"input": _n(r, 3, 4)}, {"negative_slope": 0.1}),
    "elu": lambda r: ({"input": _n(r, 3, 4)}, {}),
    "gelu": lambda r: ({"input": _n(r, 3, 4)}, {}),
    "sigmoid": lambda r: ({"input": _n(r, 3, 4)}, {}),
    "tanh": lambda r: ({"input": _n(r, 3, 4)}, {}),
    "dropout": lambda r: ({"input": _n(r, 3, 4)}, {"p": 0.0}),
    "cross_entropy": lambda r: ({"input": _n(r, 4, 5), "target": r.integers(0, 5, 4)}, {}),
    "multi_margin_loss": lambda r: ({"input": _n(r, 4, 5), "target": r.integers(0, 5, 4)}, {}),
    "scaled_dot_product_attention": lambda r: ({"query": _n(r, 2, 3, 4), "key": _n(r, 2, 5, 4),
                                                "value": _n(r, 2, 5, 4)}, {}),
    "multi_head_attention": lambda r: (
        {"query": _n(r, 2, 3, 4), "key": _n(r, 2, 5, 4), "value": _n(r, 2, 5, 4),
         "in_proj_weight": _n(r, 12, 4), "in_proj_bias": _n(r, 12),
         "out_proj_weight": _n(r, 4, 4), "out_proj_bias": _n(r, 4)}, {"num_heads": 2}),
    "multi_head_attention_forward": lambda r: (
        {"query": _n(r, 3, 2, 4), "key": _n(r, 5, 2, 4), "value": _n(r, 5, 2, 4),
         "in_proj_weight": _n(r, 12, 4), "in_proj_bias": _n(r, 12),
         "out_proj_weight": _n(r, 4, 4), "out_proj_bias": _n(r, 4)},
        {"embed_dim_to_check": 4, "num_heads": 2, "bias_k": None, "bias_v": None,
         "add_zero_attn": False, "dropout_p": 0.0}),
    "pad": lambda r: ({"input": _n(r, 1, 2, 4, 5)}, {"pad": (1, 2, 0, 1), "mode": "reflect"}),
    "group_norm": lambda r: ({"input": _n(r, 2, 6, 3, 2), "weight": _n(r, 6), "bias": _n(r, 6)},
                             {"num_groups": 3}),
    "box_iou": lambda r: ({"boxes1": _boxes(r, 3), "boxes2": _boxes(r, 4)}, {}),
    "nms": lambda r: ({"boxes": _boxes(r, 5), "scores": r.uniform(0, 1, 5)},
                      {"iou_threshold": 0.5}),
    "batched_nms": lambda r: ({"boxes": _boxes(r, 5), "scores": r.uniform(0, 1, 5),
                               "idxs": r.integers(0, 2, 5)}, {"iou_threshold": 0.5}),
    "roi_align": lambda r: ({"input": _n(r, 2, 2, 8, 8),
                             "boxes": np.concatenate([r.integers(0, 2, (3, 1)), _boxes(r, 3)],
                                                     axis=1)}, {"output_size": 2}),
    "roi_pool": lambda r: ({"input": _n(r, 2, 2, 8, 8),
                            "boxes": np.concatenate([r.integers(0, 2, (3, 1)), _boxes(r, 3)],
                                                    axis=1)}, {"output_size": 2}),
}
