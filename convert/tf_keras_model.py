"""A Keras 3 functional model rebuilt layer by layer in tf_keras (Keras 2), with the same names and weights.

tensorflow-model-optimization (the QAT stack convert.qat uses) wraps tf_keras layers only; Keras 3's own
configs do not load there (tf_keras refuses Keras 3's InputLayer `batch_shape`, dtype-policy dicts and
initializer configs), so each layer is rebuilt from its constructor arguments and the graph is re-wired from
Keras 3's `inbound_nodes`. Weights are copied layer by layer; `to_tf_keras` checks the two models agree on a
probe batch before anything trains on the copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Keras 3 constructor arguments tf_keras does not take; initializers are dropped too (the weights are copied).
_KERAS3_ONLY = ("quantization_config", "optional", "lora_rank", "lora_alpha", "synchronized")
_PENALTIES = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
              "bias_constraint", "depthwise_regularizer", "depthwise_constraint", "pointwise_regularizer",
              "pointwise_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")


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
    tensors: dict[str, Any] = {}
    for spec in cfg["layers"]:
        name, cls_name = spec["config"]["name"], spec["class_name"]
        if cls_name == "InputLayer":
            tensors[name] = tf_keras.Input(batch_shape=spec["config"]["batch_shape"], name=name)
            continue
        cls = getattr(tf_keras.layers, cls_name, None)
        if cls is None or spec.get("module", "keras.layers") not in ("keras.layers", None):
            raise NotRebuildable(f"layer '{name}' ({cls_name}) has no tf_keras counterpart")
        ins = [tensors[n] for n in _inbound(spec)]
        tensors[name] = cls(**_layer_config(spec))(ins if len(ins) > 1 else ins[0])
    twin = tf_keras.Model(tensors[ends[0]], tensors[ends[1]])
    for layer in model.layers:
        if layer.weights:
            twin.get_layer(layer.name).set_weights(layer.get_weights())
    diff = float(np.max(np.abs(np.asarray(twin(probe, training=False)) - np.asarray(model(probe, training=False)))))
    if not diff <= 1e-4:
        raise NotRebuildable(f"the tf_keras rebuild differs from the model by {diff:.3g} on {len(probe)} images")
    return twin


def weights_back(model: Any, twin: Any) -> Any:
    """A copy of the Keras 3 `model` carrying `twin`'s float weights (a QAT-wrapped twin: each wrapper's own
    kernel/bias/gamma..., matched by the variable's last name; the quantizers' min/max are not weights of it)."""
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
    return name.split("/")[-1].split(":")[0]
