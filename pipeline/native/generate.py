"""A native PyTorch model from the Keras file alone: `model.py` (plain source), its state_dict, and the
map from every Keras weight to its state_dict key with the layout transform.

Built from the config and weights the file states, read with h5py and JSON (`keras_file`) — no
TensorFlow, no ONNX — so it is a conversion independent of the tf2onnx → onnx2torch path, and the model
users keep training. Each layer is written by its emitter (`layers`); the helpers the source needs are
`keras_ops`, copied into it.
"""

from __future__ import annotations

import json
import keyword
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.keras_file.graph import KerasLayer, nested_inputs, nested_layers, with_nested
from pipeline.keras_file.model import KerasModel
from pipeline.native import emitters, keras_ops
from pipeline.native.emitters import Context, Tensor

FLOAT32 = "float32"  # the dtype the generated model computes in (`generate` casts every weight to it)
# Names the generated source uses itself: a layer called `F` or `x` gets a trailing underscore.
_RESERVED = {"self", "x", "torch", "F", "nn", "Model"} | {name for name in dir(keras_ops) if not name.startswith("_")}


@dataclass
class NativeModel:
    """The generated model: `source` of model.py, its `state_dict` (numpy, float32), `weights_map`
    ({"layer/weight": {"key", "permute", "reshape"}}), what the weights do not carry (`not_carried`:
    regularizers and constraints, which training in PyTorch must add back if wanted), and `notes`: one
    line per config field the native model ignores or dtype it does not compute in (also in model.py)."""

    source: str
    state_dict: dict[str, np.ndarray]
    weights_map: dict[str, dict]
    not_carried: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Body:
    """The lines of one class of the generated source: `Model`, or a Keras model nested as a layer (`_add_nested`),
    with the identifiers its methods use. `prefix`: the nested module's attribute in `Model` and a dot — its
    state_dict keys, and the `LAYER_OUTPUTS` entries of its layers (read from its forward's locals), start with it."""

    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    prefix: str = ""


@dataclass
class _Nested:
    """A nested Keras model's class in the source: its name, the Keras model's name, its forward's parameters and body."""

    name: str
    keras_name: str
    params: list[str]
    body: _Body


def _text(value: str) -> str:
    """`value` (a name from the user's file) safe to write in a comment or docstring of the generated
    source: a newline or quote in a layer name must not become code when model.py is imported."""
    return re.sub(r"[^\w .:/()+\-]", "?", value)


def _identifier(name: str, taken: set[str]) -> str:
    """`name` as a Python identifier not in `taken` (which it joins)."""
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit() or keyword.iskeyword(ident):
        ident = f"layer_{ident}"
    while ident in taken or ident in _RESERVED:
        ident += "_"
    taken.add(ident)
    return ident


def _not_carried(layer: KerasLayer) -> list[str]:
    return [f"{layer.name}/{key}" for key, value in sorted(layer.config.items())
            if key.endswith(("_regularizer", "_constraint")) and value is not None]


def _notes(layer: KerasLayer, ignored: tuple[str, ...]) -> list[str]:
    """What the native model leaves out of `layer`'s config: the `ignored` fields, and a dtype other than
    float32 (a mixed-precision policy, float64), which the native model does not compute in."""
    notes = [f"layer {layer.name} ({layer.class_name}): config field {name} ignored" for name in ignored]
    if layer.class_name == "InputLayer" and str(layer.dtype).startswith(("int", "uint")):
        return notes  # token ids: whole numbers, exact in float32 (below 2**24), as the ONNX model takes them
    if layer.dtype not in (None, FLOAT32):
        notes.append(f"layer {layer.name} ({layer.class_name}): dtype {layer.dtype} (the native model computes in {FLOAT32})")
    return notes


def _input_rank(layer: KerasLayer) -> int:
    """The rank of the model's input as `layer` states it: an InputLayer, or the first layer of a Keras 2
    Sequential (Keras 3 `batch_shape`, Keras 2 `batch_input_shape`).

    Raises:
        BadInput: a sparse or ragged input, or one whose rank the config does not state.
    """
    for flag in ("sparse", "ragged"):
        if layer.config.get(flag):
            raise emitters.unsupported(layer, f"a {flag} input")
    shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape") or []
    if len(shape) < 2:
        raise BadInput(f"layer {layer.name}: the model states no input shape (batch_input_shape); the native model needs its rank")
    return len(shape)


def _statement(var: str, emitted: emitters.Emitted, layer: KerasLayer, context: Context) -> tuple[list[str], str | None]:
    """The forward lines assigning `layer`'s output to `var`, and the variable holding its logits where
    its activation is a softmax."""
    activation = emitted.activation
    if activation in (None, "linear"):
        return [f"{var} = {emitted.expr}"], None
    if activation == "softmax":
        logits = emitted.expr if emitted.expr.isidentifier() else f"{var}_logits"
        lines = [] if logits == emitted.expr else [f"{logits} = {emitted.expr}"]
        return lines + [f"{var} = {emitters.activation_source(activation, logits, emitted.rank, context, layer)}"], logits
    if emitted.expr.isidentifier():
        return [f"{var} = {emitters.activation_source(activation, emitted.expr, emitted.rank, context, layer)}"], None
    return [f"{var} = {emitted.expr}", f"{var} = {emitters.activation_source(activation, var, emitted.rank, context, layer)}"], None


def generate(model: KerasModel, keras2: bool = False) -> NativeModel:
    """`model` as PyTorch source and weights (see `NativeModel`). `keras2`: the activations mean what
    Keras 2 (tf-keras) makes of them — its hard_sigmoid is another function — as where tf-keras, not
    Keras 3, loads the file; Keras 3 reads a Keras 2 file's hard_sigmoid as its own.

    Raises:
        BadInput: a layer or option with no native equivalent here, named; or a Keras weight the
            generated model does not take.
    """
    weights = model.weights
    main = _Body()
    taken = main.taken
    tensors: dict[str, Tensor] = {}
    inputs: list[str] = []
    classes: list[_Nested] = []
    state_dict: dict[str, np.ndarray] = {}
    weights_map: dict[str, dict] = {}
    layer_outputs: dict[str, str] = {}
    logits_of: dict[str, str] = {}
    not_carried: list[str] = []
    notes: list[str] = []

    def add(layer: KerasLayer, var: str, sources: list[Tensor], comment: str, key: str | None = None, call: int = 0,
            attr: str | None = None, body: _Body = main) -> Tensor:
        """`layer`, taking `sources`, into the lines of `body` (`Model`'s, or a nested model's class), the state_dict
        and the weights map; its output, known as `key` (a nested model's layer: `outer/inner`; its weights are filed
        under its own name). A layer Keras keeps frozen (trainable=False in its config) is frozen: `requires_grad_(False)`,
        and a BatchNorm in inference mode. A later `call` of a shared layer is a forward line only: its output in `var`,
        from the module `self.<attr>` its first call made; known as `key#call`."""
        key = key or layer.name
        init_lines, forward_lines = body.init, body.forward
        frozen = layer.config.get("trainable") is False
        context = Context(attr or var, keras2, legacy_h5=not zipfile.is_zipfile(model.path), frozen=frozen)
        if layer.operands is not None:
            emitted = emitters.emit_op(layer, tensors, context)
        else:
            emitted = emitters.emit(layer, weights.get(layer.name, {}), sources, context)
        if call:
            if emitted.mask is not None and not emitted.mask.isidentifier():
                raise emitters.unsupported(layer, "a shared layer that makes a mask")
            lines, _ = _statement(var, emitted, layer, context)
            lines[-1] += comment
            forward_lines.extend(_with_states(lines, var, emitted, key, call, tensors, body.taken))
            tensors[_key(key, call)] = Tensor(var, emitted.rank, emitted.mask)
            return tensors[_key(key, call)]
        if emitted.module is not None:
            init_lines.append(f"self.{var} = {emitted.module}{comment}")
            if frozen and (emitted.weights or emitted.constants):
                init_lines.append(f"self.{var}.requires_grad_(False)  # frozen in Keras (trainable=False): not trained")
        lines, logits = _statement(var, emitted, layer, context)
        lines[-1] += comment
        forward_lines.extend(_with_states(lines, var, emitted, key, 0, tensors, body.taken))
        if logits:
            logits_of[key] = body.prefix + logits
        mask = emitted.mask
        if mask is not None and not mask.isidentifier():  # computed here: an Embedding's `ids != 0`
            name = _identifier(f"{var}_mask", body.taken)
            forward_lines.append(f"{name} = {mask}{_MASK_COMMENT}{_text(layer.name)}: True where a step counts")
            mask = name
        tensors[key] = Tensor(var, emitted.rank, mask)
        layer_outputs[key] = body.prefix + var
        not_carried.extend(_not_carried(layer))
        notes.extend(_notes(layer, emitted.ignored))
        for weight in emitted.in_source:
            weights_map[f"{layer.name}/{weight}"] = {"key": None, "permute": None, "reshape": None, "note": "a constant in model.py"}
        unmatched = sorted(set(weights.get(layer.name, {})) - set(emitted.weights) - set(emitted.in_source))
        if unmatched:
            raise BadInput(f"layer {layer.name}: weight {unmatched[0]} has no place in the native model")
        for weight, rule in emitted.weights.items():
            for name, tensor in rule.tensors(np.asarray(weights[layer.name][weight], dtype=np.float32)).items():
                state_dict[f"{body.prefix}{var}.{name}"] = tensor
            weights_map[f"{layer.name}/{weight}"] = rule.as_map(body.prefix + var)
        for name, value in emitted.constants.items():
            state_dict[f"{body.prefix}{var}.{name}"] = np.asarray(value, dtype=np.float32)
        return tensors[key]

    if model.layers and model.layers[0].class_name != "InputLayer":
        # a Keras 2 Sequential states its input on its first layer, with no InputLayer of its own; its rank
        # is all the model needs (a sequence of any length leaves a dimension None)
        var = _identifier("inputs", taken)
        inputs.append(var)
        tensors[""] = Tensor(var, _input_rank(model.layers[0]))
        main.forward.append(f"{var} = channels_first({var})  # channels-last in, channels-first inside")
    input_vars: dict[str, str] = {}
    names = set(model.layer_names)  # the model's own layers', and each nested layer's as it comes: weights are filed by name
    shared = {layer.name for layer in model.layers if layer.calls > 1}  # whose outputs only (layer, call) tells apart
    for index, layer in enumerate(model.layers):
        var = _identifier(layer.name, taken)
        comment = f"  # {_text(layer.name)} ({_text(layer.class_name)})"
        if layer.class_name == "InputLayer":
            inputs.append(var)
            input_vars[layer.name] = var
            tensors[layer.name] = Tensor(var, _input_rank(layer))
            notes.extend(_notes(layer, ()))
            main.forward.append(f"{var} = channels_first({var}){comment}: channels-last in, channels-first inside")
            layer_outputs[layer.name] = var
            continue
        later_output = any(index for refs in layer.call_refs for _, _, index in refs)  # by its name alone: the first output
        if layer.calls > 1 or shared & set(layer.inbound) or later_output:
            _add_calls(layer, var, comment, add, tensors, layer_outputs, main, logits_of, names, shared, classes)
            continue
        sources = _masked(layer, _sources(layer, layer.inbound or (("",) if index == 0 else ()), tensors), tensors)
        if nested_layers(layer):
            _add_nested(layer, var, add, tensors, layer_outputs, main, logits_of, names, classes)
            continue
        add(layer, var, sources, comment)
    order = [input_vars[name] for name, _ in model.inputs if name in input_vars]  # `forward` takes them in Keras's order
    inputs = order + [var for var in inputs if var not in order]
    masks = {tensor.mask for tensor in tensors.values() if tensor.mask}
    for body in (main, *(nested.body for nested in classes)):
        body.forward[:] = _without_unused_masks(body.forward, masks)
    outputs = model.output_names
    missing = [name for name in outputs if name not in tensors]
    if missing:
        raise BadInput(f"output layer {missing[0]} is not in the model's layers")
    # the pre-softmax logits: of the output, or of each output (None where it ends in no softmax)
    logits = logits_of.get(outputs[0]) if len(outputs) == 1 else [logits_of.get(name) for name in outputs]
    ranks = {name: tensors[name].rank for name in outputs}
    source = _source(model, inputs, outputs, ranks, main, classes, layer_outputs, logits, tensors, notes)
    return NativeModel(source, state_dict, weights_map, not_carried, notes)


_MASK_COMMENT = "  # the Keras mask of "


def _without_unused_masks(lines: list[str], masks: set[str]) -> list[str]:
    """`lines` without the masks (variables of `masks`) that no later line reads: an Embedding's mask where Keras 3
    passes its own `NotEqual` op as `mask=`, or where no layer after it takes one."""
    def read_later(index: int, var: str) -> bool:
        return any(re.search(rf"\b{var}\b", line.split("  #")[0]) for line in lines[index + 1:])

    return [line for index, line in enumerate(lines)
            if not (_MASK_COMMENT in line and line.split(" = ")[0] in masks and not read_later(index, line.split(" = ")[0]))]


def _sources(layer: KerasLayer, inbound: tuple[str, ...], tensors: dict[str, Tensor]) -> list[Tensor]:
    """The tensors `layer` takes (`inbound`: their layers' names); BadInput where one is not an earlier layer's output."""
    sources = [tensors[name] for name in inbound if name in tensors]
    if len(sources) != len(inbound) or not sources:
        raise BadInput(f"layer {layer.name} ({layer.class_name}): its inputs {list(layer.inbound)} are not outputs of "
                       "earlier layers; the native model needs a plain layer graph")
    return sources


def _masked(layer: KerasLayer, sources: list[Tensor], tensors: dict[str, Tensor]) -> list[Tensor]:
    """`sources` with the mask `layer` is passed as `mask=` (Keras 3 writes it so) on the first, where it is."""
    if layer.mask is None:
        return sources
    return [replace(sources[0], mask=_sources(layer, (layer.mask,), tensors)[0].var), *sources[1:]]


def _key(name: str, call: int, index: int = 0) -> str:
    """How the generator knows output `index` of a layer's `call`: its name for the first output of the first call,
    `name#call` for a later call's, `…:index` for a later output (a recurrent layer's states)."""
    return (name if call == 0 else f"{name}#{call}") + (f":{index}" if index else "")


def _with_states(lines: list[str], var: str, emitted: emitters.Emitted, key: str, call: int, tensors: dict[str, Tensor],
                 taken: set[str]) -> list[str]:
    """`lines`, the layer's last line unpacking its several outputs (`Emitted.states`: `lstm, lstm_h, lstm_c = ...`)
    into variables of their own, each known as `_key(key, call, index)`."""
    if not emitted.states:
        return lines
    extra = [_identifier(f"{var}_{name}", taken) for name in emitted.states]
    for index, state in enumerate(extra, start=1):
        tensors[_key(key, call, index)] = Tensor(state, 2)
    target, _, rest = lines[-1].partition(" = ")
    return [*lines[:-1], f"{', '.join([target, *extra])} = {rest}"]


def _call_keys(layer: KerasLayer, call: int, shared: set[str], tensors: dict[str, Tensor]) -> tuple[str, ...]:
    """The keys (`_key`) of the tensors `layer`'s `call` takes, from its config's (layer, node, tensor) triples.

    Raises:
        BadInput: the config does not say which call of a shared layer it takes, an op or a mask takes it, or
            it takes a later output of a layer the native model gives one.
    """
    refs = layer.call_refs[call] if call < len(layer.call_refs) else ()
    if not refs or (layer.calls > 1 and len(refs) != len(layer.call_refs[0])):
        raise emitters.unsupported(layer, "a call of a shared layer whose inputs the config does not state per call")
    if layer.operands is not None or layer.mask is not None and (layer.calls > 1 or layer.mask in shared):
        raise emitters.unsupported(layer, "an op or a mask on the outputs of a shared layer or of a layer of several outputs")
    for name, node, index in refs:
        if index and _key(name, node, index) not in tensors:
            raise emitters.unsupported(layer, f"output {index} of layer {name} (a layer of several outputs)")
    return tuple(_key(name, node, index) for name, node, index in refs)


def _add_calls(layer: KerasLayer, var: str, comment: str, add, tensors: dict[str, Tensor], layer_outputs: dict[str, str],
               main: _Body, logits_of: dict[str, str], names: set[str], shared: set[str], classes: list[_Nested]) -> None:
    """A layer called more than once (a shared layer: a siamese encoder's, a recommender's embedding), or one taking
    such a layer's output or a later output of a layer (an LSTM's states): one module, and one forward line per
    call, each on the tensors its call takes (the config's (layer, node, tensor) triples). A nested model called so
    is its class's one module, called once per call. `LAYER_OUTPUTS` names the first call's outputs (the ones Keras reports)."""
    for call in range(layer.calls):
        keys = _call_keys(layer, call, shared, tensors)
        sources = _sources(layer, keys, tensors)
        if nested_layers(layer):
            _add_nested(layer, var, add, tensors, layer_outputs, main, logits_of, names, classes, call=call, keys=keys)
        elif call == 0:
            add(layer, var, _masked(layer, sources, tensors), comment)
        else:
            add(layer, _identifier(f"{layer.name}_call{call + 1}", main.taken), sources, f"{comment}, call {call + 1}: the same module",
                call=call, attr=var)


def _add_nested(layer: KerasLayer, var: str, add, tensors: dict[str, Tensor], layer_outputs: dict[str, str], main: _Body,
                logits_of: dict[str, str], names: set[str], classes: list[_Nested], call: int = 0,
                keys: tuple[str, ...] | None = None) -> None:
    """A model nested as a layer (a pretrained base, ConvNeXt's Sequential stem): a class of its own (`classes`), its
    layers in its graph order in its `__init__` and `forward`, each under its own name there and as `outer/inner` in
    `LAYER_OUTPUTS` (the names the verifier compares by: `keras_file.graph.with_nested`); `Model` holds it as
    `self.<var>` and calls it. A Keras mask crosses its boundary as a tensor of its own: a parameter after the input
    it belongs to, a second value returned. A frozen base's layers are frozen by their own configs, as Keras writes
    them (`base.trainable = False` sets each layer's). Called more than once (a siamese encoder): the same module on
    `call`'s tensors, which `keys` name."""
    comment = f"  # {_text(layer.name)} ({_text(layer.class_name)})"
    fed = tuple(dict.fromkeys(keys or layer.inbound))  # a tensor fed to two of its inputs is one parameter
    outer = dict(zip(fed, _sources(layer, fed, tensors), strict=True))
    passed = [v for tensor in outer.values() for v in (tensor.var, tensor.mask) if v]
    arguments = ", ".join(passed)
    if call:
        first = next(nested for nested in classes if nested.keras_name == layer.name)
        if len(passed) != len(first.params):
            raise emitters.unsupported(layer, "a nested model called once with a mask and once without")
        out = _identifier(f"{layer.name}_call{call + 1}", main.taken)
        mask = _identifier(f"{out}_mask", main.taken) if tensors[layer.name].mask else None
        main.forward.append(f"{', '.join(filter(None, (out, mask)))} = self.{var}({arguments}){comment}, call {call + 1}: the same module")
        tensors[_key(layer.name, call)] = Tensor(out, tensors[layer.name].rank, mask)
        return
    flat = with_nested([replace(layer, calls=1, inbound=fed)])  # fed this call's tensors
    inner, own = flat[:-1], flat[-1]
    if len(own.inbound) != 1:
        raise emitters.unsupported(layer, f"a nested model of {len(own.inbound)} outputs")
    deeper = next((entry.name for entry in inner if entry.name.count("/") > 1 or nested_layers(entry)), None)
    if deeper is not None:
        raise emitters.unsupported(layer, f"a model nested in a nested model ({deeper.rsplit('/', 1)[0]})")
    body = _Body(prefix=f"{var}.")
    own_inputs = nested_inputs(layer)
    params = []
    for index, (name, tensor) in enumerate(outer.items()):  # its inputs (and their masks) are its forward's parameters
        param = _identifier(own_inputs[index] if len(own_inputs) == len(outer) else "inputs", body.taken)
        mask = _identifier(f"{param}_mask", body.taken) if tensor.mask else None
        params += filter(None, (param, mask))
        tensors[name] = Tensor(param, tensor.rank, mask)
    for entry in inner:
        leaf = entry.name.rsplit("/", 1)[-1]
        if entry.calls > 1:
            raise emitters.unsupported(replace(entry, name=leaf), f"a layer called {entry.calls} times (shared between inputs)")
        if leaf in names:
            # its weights are filed under its own name (`keras_file.weights`), which another layer has too
            raise emitters.unsupported(layer, f"a layer {leaf} of the same name as another layer of the model")
        names.add(leaf)
        inner_comment = f"  # {_text(leaf)} ({_text(entry.class_name)}, in {_text(entry.name.rsplit('/', 1)[0])})"
        add(replace(entry, name=leaf), _identifier(leaf, body.taken), _masked(entry, _sources(entry, entry.inbound, tensors), tensors),
            inner_comment, key=entry.name, body=body)
    result = tensors[own.inbound[0]]
    tensors.update(outer)  # the names the nested model's inputs had inside it are the outer model's tensors again
    body.forward.append(f"return {', '.join(filter(None, (result.var, result.mask)))}")
    name = _class_name(layer.name, {nested.name for nested in classes})
    classes.append(_Nested(name, layer.name, params, body))
    frozen = "; frozen in Keras (trainable=False): its layers are frozen below" if layer.config.get("trainable") is False else ""
    main.init.append(f"self.{var} = {name}(){comment}: a Keras model nested as a layer{frozen}")
    mask = _identifier(f"{var}_mask", main.taken) if result.mask else None
    main.forward.append(f"{', '.join(filter(None, (var, mask)))} = self.{var}({arguments}){comment}")
    tensors[layer.name] = Tensor(var, result.rank, mask)
    layer_outputs[layer.name] = var
    if own.inbound[0] in logits_of:  # a base ending in a softmax: the model's logits, where it is the output
        logits_of[layer.name] = logits_of[own.inbound[0]]


def _class_name(name: str, taken: set[str]) -> str:
    """A nested Keras model's name as a class name (`mobilenetv2_1.00_224` → `Mobilenetv2_1_00_224`), not `Model`,
    a copied `keras_ops` class or one of `taken`."""
    ident = re.sub(r"\W", "_", name)
    ident = ident[:1].upper() + ident[1:] if ident[:1].isalpha() else f"Nested_{ident}"
    while ident in taken or ident in _RESERVED or keyword.iskeyword(ident):
        ident += "_"
    return ident


def _class(name: str, doc: str, params: list[str], body: _Body) -> str:
    """One `nn.Module` class of the source: `body`'s lines as its `__init__` and its `forward(params)`."""
    init = "\n".join(f"        {line}" for line in body.init) or "        pass"
    steps = "\n".join(f"        {line}" for line in body.forward)
    docstring = f'    """{doc}"""\n\n' if doc else ""
    return (f"class {name}(nn.Module):\n{docstring}"
            + f"    def __init__(self):\n        super().__init__()\n{init}\n\n"
            + f"    def forward(self, {', '.join(params)}):\n{steps}\n")


def _source(model, inputs, outputs, ranks, main: _Body, classes: list[_Nested], layer_outputs, logits, tensors, notes) -> str:
    ops = Path(keras_ops.__file__).read_text()
    ops = ops[ops.index('"""', 3) + 3:].lstrip("\n")  # keras_ops without its module docstring
    returns = [f"channels_last({tensors[name].var})" for name in outputs]
    main = replace(main, forward=[*main.forward, f"return {', '.join(returns)}"])
    shapes = ", ".join(f"(N, {', '.join('…' for _ in range(ranks[name] - 1))})" for name in outputs)
    nested = "".join(_class(c.name, f"The Keras model {_text(c.keras_name)}, nested as a layer: takes and returns channels-first tensors.",
                            c.params, c.body) + "\n\n" for c in classes)
    ignored = "".join(f"    {_text(note)}\n" for note in notes)
    ignored = f"\nLeft out of the Keras config:\n{ignored}" if notes else ""
    header = f'''"""{_text(model.name)} as a PyTorch module, generated from its Keras config and weights alone.

Inputs and outputs are laid out as in Keras (images channels-last: (N, H, W, C)); inside, tensors are
channels-first. `forward` lists the Keras layers in graph order, each named in a comment.

    from safetensors.torch import load_file
    model = Model()
    model.load_state_dict(load_file("model.safetensors"))

Weights: model.safetensors; where each Keras weight went: weights_map.json.
Outputs: {shapes}.
{ignored}"""

'''
    return (header + ops.rstrip("\n") + "\n\n\n"
            + "# Keras layer name → the variable in `forward` holding its output (channels-first inside).\n"
            + f"LAYER_OUTPUTS = {json.dumps(layer_outputs, indent=4)}\n"
            + "# The variable holding the pre-softmax logits of the output where it ends in a softmax (of several outputs: one\n"
            + "# such variable per output, in order, or None).\n"
            + f"LOGITS = {logits!r}\n\n\n"
            + nested + _class("Model", "", inputs, main))
