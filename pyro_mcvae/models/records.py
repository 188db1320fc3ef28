"""What a checkpoint records of a model so that the model can be rebuilt from it alone: the
registered method's name, every field of its config dataclass and the component sizes
(:func:`model_record`); :func:`build_from_record` rebuilds it through the registry and
:func:`record_differences` names the settings in which two records differ.

Values are kept as they are (tuples, tensors such as a ``graph``, network factories such as
:class:`~pyro_mcvae.nets.ResNetNets`): the checkpoint file is pickled by ``torch.save``.
:func:`plain` gives the JSON-friendly form that ``results.json`` and error messages show.
"""

from __future__ import annotations

import dataclasses
import pickle

import torch

from .registry import _METHODS, build_model, get_method

__all__ = ["build_from_record", "model_record", "plain", "record_differences"]


def model_record(model) -> dict | None:
    """``{"method", "config": {field: value}, "component_dims"}`` of a model built through the
    registry (:func:`~pyro_mcvae.models.build_model`, ``MCVAE.build``); ``None`` for one built
    by hand (its method is not registered, or its config is not that method's dataclass)."""
    name, config = getattr(model, "method", None), getattr(model, "config", None)
    method = _METHODS.get(name) if isinstance(name, str) else None
    if method is None or type(config) is not method.config:
        return None
    record = {"method": name, "config": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)},
              "component_dims": [int(d) for d in model.component_dims]}
    try:
        pickle.dumps(record)
    except Exception as err:  # noqa: BLE001 - any pickling failure means the same thing here
        raise ValueError(f"the settings of this {name!r} model cannot be saved with its weights (a config value "
                         f"cannot be pickled: {err}); use values such as numbers, strings, tuples, tensors or "
                         "network factories (MLPNets, ResNetNets)") from None
    return record


def build_from_record(record: dict):
    """The model ``record`` describes, freshly initialised (the caller loads its weights). Fields
    the record lacks (settings added to the method after it was written) take their defaults."""
    name = record["method"]
    if name not in _METHODS:
        try:
            get_method(name)
        except ValueError as err:
            raise ValueError(f"{err}. A method of your own must be registered (pyro_mcvae.register) in this "
                             "process before its models can be loaded: import the module that registers it") from None
    method = _METHODS[name]
    known = {f.name for f in dataclasses.fields(method.config)}
    extra = sorted(set(record["config"]) - known)
    if extra:
        raise ValueError(f"the saved {name!r} model has settings {extra} that {method.config.__name__} does not "
                         "have (written by another version of the method?)")
    return build_model(name, record["component_dims"], method.config(**record["config"]))


def record_differences(saved: dict | None, current: dict | None) -> list[str]:
    """``"<setting>: <saved> in the checkpoint, <current> here"`` for every setting (method,
    component sizes, config field) in which the two records differ; empty when they agree or
    when either is ``None`` (nothing recorded to compare)."""
    if saved is None or current is None:
        return []
    out = []
    for key in ("method", "component_dims"):
        if _key(saved[key]) != _key(current[key]):
            out.append(f"{key}: {plain(saved[key])!r} in the checkpoint, {plain(current[key])!r} here")
    if out and saved["method"] != current["method"]:
        return out  # other methods' fields do not compare
    defaults = _defaults(current["method"])
    for name in dict.fromkeys([*saved["config"], *current["config"]]):
        old, new = (r["config"].get(name, defaults.get(name)) for r in (saved, current))
        if _key(old) != _key(new):
            out.append(f"{name}: {plain(old)!r} in the checkpoint, {plain(new)!r} here")
    return out


def plain(value):
    """``value`` as JSON-friendly data: tuples as lists, tensors as nested lists, other objects
    (network factories) as their ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return repr(value)


def _key(value):
    """A form of ``value`` that compares by content (a list and a tuple of the same sizes agree;
    tensors by dtype, shape and entries; other objects by type and ``repr``)."""
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _key(v)) for k, v in value.items()))
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.flatten().tolist()))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return (type(value).__qualname__, repr(value))


def _defaults(name: str) -> dict:
    method = _METHODS.get(name)
    if method is None:
        return {}
    return {f.name: f.default for f in dataclasses.fields(method.config) if f.default is not dataclasses.MISSING}
