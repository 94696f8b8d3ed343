"""A Keras 3 functional model rebuilt layer by layer in tf_keras (Keras 2), with the same names and weights.

tensorflow-model-optimization (the QAT stack convert.qat uses) wraps tf_keras layers only; Keras 3's own
configs do not load there (tf_keras refuses Keras 3's InputLayer `batch_shape`, dtype-policy dicts and
initializer configs), so each layer is rebuilt from its constructor arguments and the graph is re-wired from
Keras 3's `inbound_nodes`. Weights are copied layer by layer; `to_tf_keras` checks the two models agree on a
probe batch before anything trains on the copy.

Keras 3 activations tf_keras lacks or defines otherwise are rebuilt as a small layer of their own
(`Keras3Activation`): `hard_silu` (MobileNetV3's; tf_keras has none) and `hard_sigmoid` (Keras 3: relu6(x + 3) / 6;
tf_keras: clip(0.2 x + 0.5), another function under the same name). Not as an `Activation` layer: tfmot quantizes
the output of any unannotated `Activation` that feeds a quantized layer and raises on a function it does not know;
a layer class outside its registry stays float. `keras3_activations()` is the scope (not a global registration)
in which tf_keras deserializes that class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

# Keras 3 constructor arguments tf_keras does not take; initializers are dropped too (the weights are copied).
_KERAS3_ONLY = ("quantization_config", "optional", "lora_rank", "lora_alpha", "synchronized")
_PENALTIES = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
              "bias_constraint", "depthwise_regularizer", "depthwise_constraint", "pointwise_regularizer",
              "pointwise_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")


def _hard_sigmoid(x: Any) -> Any:
    import tensorflow as tf

    return tf.nn.relu6(x + 3.0) / 6.0


def _hard_silu(x: Any) -> Any:
    return x * _hard_sigmoid(x)


KERAS3_ACTIVATIONS = {"hard_silu": _hard_silu, "hard_swish": _hard_silu, "hard_sigmoid": _hard_sigmoid}


@lru_cache(maxsize=1)
def keras3_activation_layer() -> type:
    """The tf_keras layer applying one of KERAS3_ACTIVATIONS by name (made on first use: tf_keras is heavy)."""
    import tf_keras

    class Keras3Activation(tf_keras.layers.Layer):
        def __init__(self, function: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.function = function

        def call(self, x: Any) -> Any:
            return KERAS3_ACTIVATIONS[self.function](x)

        def get_config(self) -> dict:
            return {**super().get_config(), "function": self.function}

    return Keras3Activation


@contextmanager
def keras3_activations() -> Iterator[None]:
    """tf_keras deserializes Keras3Activation while the scope is open (tfmot clones the model through configs)."""
    import tf_keras

    with tf_keras.utils.custom_object_scope({"Keras3Activation": keras3_activation_layer()}):
        yield


class NotRebuildable(ValueError):
    """The model has a layer or wiring the tf_keras rebuild does not cover (the QAT rung is skipped, with why)."""


def _layer_config(spec: dict) -> dict:
    cfg = {k: v for k, v in spec["config"].items() if k not in _KERAS3_ONLY and not k.endswith("_initializer")}
    if isinstance(cfg.get("dtype"), dict):
        cfg["dtype"] = cfg["dtype"].get("config", {}).get("name", "float32")
    for k in _PENALTIES:  # a regularizer or constraint would need its own translation; the models here have none
        if cfg.pop(k, None) is not None:
            raise NotRebuildable(f"layer '{cfg.get('name')}' has a {k}")
    return cfg


def _single(cfg: dict, key: str) -> str | None:
    """The one layer name of cfg[key]: Keras 3 writes ['image', 0, 0] for one tensor, [[...], ...] for several."""
    v = cfg.get(key)
    if isinstance(v, list) and v and isinstance(v[0], str):
        return v[0]
    return v[0][0] if isinstance(v, list) and len(v) == 1 and isinstance(v[0], list) else None


def _inbound(spec: dict) -> list[str]:
    names: list[str] = []
    if len(spec.get("inbound_nodes") or []) > 1:
        raise NotRebuildable(f"layer '{spec['config']['name']}' is called more than once (shared layer)")
    for node in spec.get("inbound_nodes") or []:
        for arg in node["args"]:
            for t in arg if isinstance(arg, list) else [arg]:
                if not isinstance(t, dict) or "keras_history" not in t.get("config", {}):
                    raise NotRebuildable(f"layer '{spec['config']['name']}' takes a non-tensor argument")
                names.append(t["config"]["keras_history"][0])
    return names


def to_tf_keras(model: Any, probe: np.ndarray) -> Any:
    """The tf_keras twin of a single-input, single-output Keras 3 functional `model` (NotRebuildable if it has a
    layer tf_keras lacks, a shared layer, or its outputs differ from the original's by more than 1e-4 on
    `probe`)."""
    import tf_keras

    cfg = model.get_config()
    ends = [_single(cfg, k) for k in ("input_layers", "output_layers")] if isinstance(cfg, dict) else [None]
    if "layers" not in cfg or None in ends:
        raise NotRebuildable("not a single-input, single-output functional model")
    twin = _rebuild(tf_keras, cfg, ends)
    for layer in model.layers:
        if layer.weights:
            twin.get_layer(layer.name).set_weights(layer.get_weights())
    diff = float(np.max(np.abs(np.asarray(twin(probe, training=False)) - np.asarray(model(probe, training=False)))))
    if not diff <= 1e-4:
        raise NotRebuildable(f"the tf_keras rebuild differs from the model by {diff:.3g} on {len(probe)} images")
    return twin


def _rebuild(tf_keras: Any, cfg: dict, ends: list) -> Any:
    tensors: dict[str, Any] = {}
    for spec in cfg["layers"]:
        name, cls_name = spec["config"]["name"], spec["class_name"]
        if cls_name == "InputLayer":
            tensors[name] = tf_keras.Input(batch_shape=spec["config"]["batch_shape"], name=name)
            continue
        scalar = _scalar_op(spec)
        if scalar is not None:  # MobileNetV3's hard sigmoid: x + 3.0 and x * (1/6), Keras 3 ops on a constant
            src, scale, offset = scalar
            tensors[name] = tf_keras.layers.Rescaling(scale, offset, name=name)(tensors[src])
            continue
        cls = getattr(tf_keras.layers, cls_name, None)
        if cls is None or spec.get("module", "keras.layers") not in ("keras.layers", None):
            raise NotRebuildable(f"layer '{name}' ({cls_name}) has no tf_keras counterpart")
        ins = [tensors[n] for n in _inbound(spec)]
        layer_cfg = _layer_config(spec)
        if cls_name == "Activation" and layer_cfg.get("activation") in KERAS3_ACTIVATIONS:
            layer = keras3_activation_layer()(layer_cfg["activation"], name=name)
        else:
            try:
                layer = cls(**layer_cfg)
            except (TypeError, ValueError) as exc:  # an argument or activation tf_keras does not know
                raise NotRebuildable(f"layer '{name}' ({cls_name}): {exc}") from None
        tensors[name] = layer(ins if len(ins) > 1 else ins[0])
    return tf_keras.Model(tensors[ends[0]], tensors[ends[1]])


def _scalar_op(spec: dict) -> tuple[str, float, float] | None:
    """(input layer, scale, offset) of a Keras 3 `ops.add`/`ops.multiply` of one tensor and one number (a layer of
    module keras.src.ops.numpy in the config), rebuilt as tf_keras Rescaling: the same x * scale + offset."""
    if spec.get("module") != "keras.src.ops.numpy" or spec["class_name"] not in ("Add", "Multiply"):
        return None
    nodes = spec.get("inbound_nodes") or []
    if len(nodes) != 1 or nodes[0].get("kwargs") or len(nodes[0]["args"]) != 2:
        return None
    tensor = [a for a in nodes[0]["args"] if isinstance(a, dict) and "keras_history" in a.get("config", {})]
    number = [a for a in nodes[0]["args"] if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(tensor) != 1 or len(number) != 1:
        return None
    src, c = tensor[0]["config"]["keras_history"][0], float(number[0])
    return (src, 1.0, c) if spec["class_name"] == "Add" else (src, c, 0.0)


# tf_keras's name of a weight -> Keras 3's, where they differ
_RENAMED = {"depthwise_kernel": "kernel"}


def weights_back(model: Any, twin: Any) -> Any:
    """A copy of the Keras 3 `model` carrying `twin`'s float weights (a QAT-wrapped twin: each wrapper's own
    kernel/bias/gamma..., matched by the variable's last name, tf_keras's `depthwise_kernel` being Keras 3's
    `kernel`; the quantizers' min/max are not weights of it)."""
    import keras

    out = keras.models.clone_model(model)
    out.set_weights(model.get_weights())
    by_layer = {layer.name: layer for layer in twin.layers}
    for layer in out.layers:
        if not layer.weights:
            continue
        src = by_layer.get(f"quant_{layer.name}") or by_layer[layer.name]
        have = {_short(w.name): w.numpy() for w in src.weights}
        layer.set_weights([have[_short(w.name)] for w in layer.weights])
    return out


def _short(name: str) -> str:
    short = name.split("/")[-1].split(":")[0]
    return _RENAMED.get(short, short)
