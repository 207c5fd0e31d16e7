"""The architecture map: a served model's blocks as a graph, built from its real module tree and config.

Every node that is a module carries its path as `named_modules()` names it (for Stable Diffusion,
prefixed by the pipeline component: `unet.`, `vae.`, `text_encoder.`) and its parameter count,
sum(p.numel()) over that module, so the map says what the checkpoint holds, not what a drawing
says. Each tensor the capture modules record (their hook names: capture.text.hook_names,
capture.vision.hook_names, capture.diffusion.attention_layers and the arrays of a diffusion Step)
sits on exactly one node, the one that makes it, and a node links to the page that shows it.

The graph, as GET /api/{family}/architecture sends it (schemas.ArchitectureOut):

    nodes  [{id, kind, name, label, parent, layer, shapes, facts, params, tied, hooks, link, rows}]
    edges  [{source, target, kind: flow | skip | context | loop, label}]
    rows   the top-level nodes' ids, row by row, for the page to lay out (a node's own `rows` hold
           its children; None is an empty cell, so a UNet's down and up blocks line up in a U)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from torch import nn

from app.capture import diffusion as diffusion_capture
from app.capture import text as text_capture
from app.capture import vision as vision_capture
from app.i18n import N_


@dataclass
class Node:
    id: str
    kind: str  # input, output, embed, param, block, norm, attention, mlp, head, component, resblock,
    # transformer, self_attention, cross_attention, sample, vae_block, conv, op, scheduler
    label: str
    name: str | None = None  # module or parameter path; None for what is not a module (the prompt, guidance)
    parent: str | None = None
    layer: int | None = None  # a transformer layer's index, where the node belongs to one
    shapes: dict[str, list[int | str]] = field(default_factory=dict)  # batch dropped; "pos" etc. vary per input
    facts: dict[str, int | float | str] = field(default_factory=dict)
    params: int = 0
    tied: str | None = None  # the node whose weights this one reuses (GPT-2's unembedding is wte's)
    hooks: list[str] = field(default_factory=list)
    link: str | None = None
    rows: list[list[str | None]] = field(default_factory=list)


@dataclass
class Edge:
    source: str
    target: str
    kind: str = "flow"  # flow | skip (UNet skip connection) | context (the prompt's K, V) | loop (next step)
    label: str | None = None


@dataclass
class Graph:
    family: str
    model: str
    params: int  # unique parameters of the whole model (tied weights counted once)
    config: dict[str, int | float | str]
    hooks: list[str]  # every capture point of the family, each placed on exactly one node
    rows: list[list[str | None]]
    nodes: list[Node]
    edges: list[Edge]

    def node(self, id: str) -> Node:
        return next(n for n in self.nodes if n.id == id)

    def to_dict(self, tr: Callable[[str], str] | None = None) -> dict:
        """The graph as JSON; with a gettext `tr`, its words in that language (module paths, hook
        names, shapes and config values stay as they are: they are the model's own names)."""
        d = dataclasses.asdict(self)
        if tr is None:
            return d
        d["config"] = {say(tr, k): say(tr, v) for k, v in d["config"].items()}
        for n in d["nodes"]:
            n["label"] = say(tr, n["label"])
            n["facts"] = {say(tr, k): say(tr, v) for k, v in n["facts"].items()}
            n["shapes"] = {say(tr, k): v for k, v in n["shapes"].items()}
        for e in d["edges"]:
            e["label"] = say(tr, e["label"])
        return d


_NUMBER = re.compile(r"\d+")


def template(text: str) -> str:
    """The catalogue's form of a map word: its numbers as {0}, {1}… ("Block 3" -> "Block {0}")."""
    count = iter(range(100))
    return _NUMBER.sub(lambda _: "{%d}" % next(count), text)


def say(tr: Callable[[str], str], value):
    """A map word in tr's language: looked up with its numbers as placeholders, then filled in again.
    Anything the catalogue does not hold (a config value such as "gelu") is returned as it is."""
    if not isinstance(value, str) or not value:
        return value
    said = tr(value)
    if said != value:
        return said
    form = template(value)
    said = tr(form)
    return value if said == form else said.format(*_NUMBER.findall(value))


# The map's words, for the catalogue (python -m app.i18n update extracts N_ strings): nodes are built
# in English and translated when served (to_dict(tr)); numbers in them are {0}, {1}… here.
MESSAGES = (
    # blocks
    N_("Block {0}"), N_("CLS token"), N_("Causal self-attention"), N_("Class probabilities"),
    N_("Classifier (reads CLS)"), N_("Classifier-free guidance"), N_("Cross-attention"), N_("Down block {0}"),
    N_("Downsample ×½"), N_("Embeddings"), N_("Fast preview (linear latent → RGB)"), N_("Feed-forward"),
    N_("Final LayerNorm"), N_("Image"), N_("Latent x_t (pure noise at the start)"), N_("Layer {0}"),
    N_("LayerNorm after"), N_("LayerNorm before"), N_("LayerNorm {0}"), N_("MLP"), N_("Mid block"),
    N_("Next-token probabilities"), N_("Patch embedding"), N_("Position embedding"), N_("Position embeddings"),
    N_("Prompt"), N_("ResBlock"), N_("Scheduler"), N_("Self-attention"), N_("Spatial transformer"),
    N_("Text encoder (CLIP)"), N_("Timestep embedding"), N_("Token + position embedding"), N_("Token embedding"),
    N_("Token ids"), N_("Tokenizer (CLIP BPE)"), N_("UNet (predicts the noise)"), N_("Unembedding (lm_head)"),
    N_("Up block {0}"), N_("Upsample ×{0}"), N_("VAE (autoencoder)"), N_("VAE decoder"), N_("VAE encoder"),
    N_("quant_conv (mean, log σ²)"), N_("conv_in"), N_("conv_norm_out"), N_("conv_out"), N_("post_quant_conv"),
    # facts and config
    N_("K, V"), N_("ε"), N_("class"), N_("ResBlocks"), N_("activation"), N_("adds"), N_("beta schedule"), N_("blocks"), N_("channels"),
    N_("classes"), N_("context"), N_("cross-attention layers"), N_("d_ff"), N_("d_head"), N_("d_mlp"),
    N_("d_model"), N_("grid"), N_("heads"), N_("into"), N_("layers"), N_("max tokens"), N_("patch"),
    N_("positions"), N_("predicts"), N_("recorded"), N_("resample"), N_("residual"), N_("scaling factor"),
    N_("self-attention"), N_("tokens"), N_("train timesteps"), N_("vocab"), N_("UNet channels"), N_("image"),
    N_("latent"), N_("patches"), N_("text d_model"),
    N_("every ResBlock"), N_("from the prompt"), N_("on request"), N_("the timestep embedding"),
    N_("x + attn(ln_{0}(x)), then + mlp(ln_{1}(x))"), N_("x + attn(norm(x)), then + mlp(norm(x))"),
    N_("{0} CLS + {1} × {2} patches"),
    # shapes
    N_("in"), N_("out"), N_("weight"), N_("hidden"), N_("q, k, v"), N_("pattern"), N_("Q from"), N_("K, V from"),
    N_("value"),
    # edges
    N_("next step"), N_("skip"),
)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Builder:
    """Collects nodes and edges; names modules by the paths `named_modules()` gives them."""

    def __init__(self, family: str, model_name: str, roots: dict[str, nn.Module]):
        self.family, self.model_name = family, model_name
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self.rows: list[list[str | None]] = []
        self.modules: dict[str, nn.Module] = {}
        # id(module) -> path. A root named "" is the model itself (GPT-2, ViT); SD's roots are its components.
        self.paths: dict[int, str] = {}
        self.param_paths: dict[int, str] = {}
        for prefix, root in roots.items():
            join = (lambda n, p=prefix: f"{p}.{n}" if n else p) if prefix else (lambda n: n)
            for n, m in root.named_modules():
                self.paths.setdefault(id(m), join(n))
            for n, p in root.named_parameters():
                self.param_paths.setdefault(id(p), join(n))

    def url(self, path: str, **query) -> str:
        return f"{path}?{urlencode({'model': self.model_name, **query})}"

    def add(self, node: Node, parent: Node | None = None, *, new_row: bool = False) -> Node:
        """Add a node; as a child of `parent` (in its last row, or a new one) or at the top level."""
        if node.id in self.nodes:
            raise ValueError(f"two nodes are called {node.id!r}")
        self.nodes[node.id] = node
        rows = parent.rows if parent is not None else self.rows
        node.parent = parent.id if parent is not None else None
        if new_row or not rows:
            rows.append([])
        rows[-1].append(node.id)
        return node

    def module(self, module: nn.Module, kind: str, label: str, parent: Node | None = None, *, new_row: bool = False,
               **kw) -> Node:
        path = self.paths[id(module)]
        self.modules[path] = module
        node = Node(id=path, kind=kind, label=label, name=path, params=count(module), **kw)
        return self.add(node, parent, new_row=new_row)

    def param(self, p: nn.Parameter, label: str, parent: Node, **kw) -> Node:
        """A parameter that is a block of its own (ViT's CLS token and position embeddings)."""
        path = self.param_paths[id(p)]
        return self.add(Node(id=path, kind="param", label=label, name=path, params=p.numel(),
                             shapes={"value": list(p.shape)}, **kw), parent)

    def chain(self, ids: list[str], kind: str = "flow", label: str | None = None) -> None:
        for a, b in zip(ids, ids[1:]):
            self.edges.append(Edge(a, b, kind, label))

    def edge(self, source: str, target: str, kind: str = "flow", label: str | None = None) -> None:
        self.edges.append(Edge(source, target, kind, label))

    def place(self, hook: str, node_id: str) -> None:
        self.nodes[node_id].hooks.append(hook)

    def graph(self, config: dict, hooks: list[str]) -> Graph:
        """The graph; its parameter count is the top-level modules' parameters, each tensor counted
        once, and a top-level node whose tensors an earlier one holds is marked `tied` to it."""
        owner: dict[int, str] = {}
        total = 0
        for node in self.nodes.values():
            if node.parent is not None or node.name not in self.modules:
                continue
            for p in self.modules[node.name].parameters():
                if id(p) in owner:
                    node.tied = node.tied or owner[id(p)]
                else:
                    owner[id(p)] = node.id
                    total += p.numel()
        placed = [h for n in self.nodes.values() for h in n.hooks]
        if sorted(placed) != sorted(hooks):  # a capture point without a home, or one in two places
            raise AssertionError(f"hooks placed {len(placed)} times for {len(hooks)} names")
        return Graph(self.family, self.model_name, total, config, hooks, self.rows, list(self.nodes.values()), self.edges)


# ---------------------------------------------------------------------------------------------
# GPT-2


def text_graph(tm) -> Graph:
    """GPT-2: token and position embeddings -> n_layer × (ln_1, attention, ln_2, MLP) -> ln_f -> lm_head."""
    model, cfg = tm.model, tm.config
    L, H, D, V, n_ctx = cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.n_positions
    dh = D // H
    d_mlp = cfg.n_inner or 4 * D
    tr = model.transformer
    b = Builder("text", tm.name, {"": model})
    stream = ["pos", D]

    # 1. Tokens in, and the two embeddings that are summed into the first residual stream.
    b.add(Node("tokens", "input", "Token ids", shapes={"out": ["pos"]}, facts={"context": n_ctx}))
    wte = b.module(tr.wte, "embed", "Token embedding", new_row=True, shapes={"weight": list(tr.wte.weight.shape), "out": stream},
                   facts={"vocab": V}, link=b.url("/text/lens"))
    wpe = b.module(tr.wpe, "embed", "Position embedding", shapes={"weight": list(tr.wpe.weight.shape), "out": stream},
                   facts={"positions": n_ctx}, link=b.url("/text/lens"))
    b.edge("tokens", wte.id)
    b.edge("tokens", wpe.id)

    # 2. The blocks: each reads and writes the residual stream.
    prev = [wte.id, wpe.id]
    for l, block in enumerate(tr.h):
        blk = b.module(block, "block", f"Block {l}", layer=l, new_row=True, shapes={"in": stream, "out": stream},
                       facts={"residual": "x + attn(ln_1(x)), then + mlp(ln_2(x))"}, link=b.url("/text/lens"))
        ln1 = b.module(block.ln_1, "norm", "LayerNorm 1", blk, layer=l, shapes={"out": stream}, link=b.url("/text/head", layer=l))
        attn = b.module(block.attn, "attention", "Causal self-attention", blk, layer=l,
                        shapes={"q, k, v": [H, "pos", dh], "pattern": [H, "pos", "pos"], "out": stream},
                        facts={"heads": H, "d_head": dh}, link=b.url("/text/attention", layer=l))
        ln2 = b.module(block.ln_2, "norm", "LayerNorm 2", blk, layer=l, shapes={"out": stream})
        mlp = b.module(block.mlp, "mlp", "MLP", blk, layer=l, shapes={"hidden": ["pos", d_mlp], "out": stream},
                       facts={"d_mlp": d_mlp, "activation": cfg.activation_function})
        b.chain([ln1.id, attn.id, ln2.id, mlp.id])
        for p in prev:
            b.edge(p, blk.id)
        prev = [blk.id]

    # 3. The final norm, the unembedding (tied to wte in GPT-2) and the next-token distribution.
    ln_f = b.module(tr.ln_f, "norm", "Final LayerNorm", new_row=True, shapes={"out": stream}, link=b.url("/text/lens"))
    head = b.module(model.lm_head, "head", "Unembedding (lm_head)", new_row=True,
                    shapes={"weight": list(model.lm_head.weight.shape), "out": ["pos", V]}, facts={"vocab": V},
                    link=b.url("/text/next"))
    b.add(Node("next", "output", "Next-token probabilities", shapes={"out": [V]}, link=b.url("/text/next")), new_row=True)
    b.chain([prev[0], ln_f.id, head.id, "next"])

    # 4. Each capture point on the module the capture reads it from (capture/text.py).
    for hook in text_capture.hook_names(L):
        parts = hook.split(".")
        if hook == "hook_embed":
            b.place(hook, wte.id)
        elif hook == "hook_pos_embed":
            b.place(hook, wpe.id)
        elif parts[2] == "ln1":
            b.place(hook, b.paths[id(tr.h[int(parts[1])].ln_1)])
        elif parts[2] == "attn":
            b.place(hook, b.paths[id(tr.h[int(parts[1])].attn)])
        else:  # hook_resid_post: the block's output
            b.place(hook, b.paths[id(tr.h[int(parts[1])])])
    config = {"layers": L, "heads": H, "d_model": D, "d_head": dh, "d_mlp": d_mlp, "context": n_ctx, "vocab": V}
    return b.graph(config, text_capture.hook_names(L))


# ---------------------------------------------------------------------------------------------
# ViT


def vision_graph(vm) -> Graph:
    """ViT: patch embedding + CLS + positions -> N × (norm, attention, norm, MLP) -> norm -> classifier."""
    model, cfg = vm.model, vm.config
    L, H, D = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size
    dh = D // H
    (ih, iw), (ph, pw) = vision_capture.pair(cfg.image_size), vision_capture.pair(cfg.patch_size)
    rows, cols = ih // ph, iw // pw
    P, N, C = rows * cols, rows * cols + 1, cfg.num_labels
    vit = model.vit
    emb = vit.embeddings
    b = Builder("vision", vm.name, {"": model})
    stream = [N, D]

    # 1. The picture, cut into patches and embedded; CLS in front; positions added.
    b.add(Node("image", "input", "Image", shapes={"out": [cfg.num_channels, ih, iw]}, link=b.url("/vision/patches")))
    e = b.module(emb, "embed", "Embeddings", new_row=True, shapes={"out": stream},
                 facts={"tokens": f"1 CLS + {rows} × {cols} patches"}, link=b.url("/vision/patches"))
    pe = b.module(emb.patch_embeddings, "embed", "Patch embedding", e, shapes={"in": [cfg.num_channels, ih, iw], "out": [P, D]},
                  facts={"patch": f"{ph} × {pw} px", "grid": f"{rows} × {cols}"}, link=b.url("/vision/patches"))
    cls = b.param(emb.cls_token, "CLS token", e)
    pos = b.param(emb.position_embeddings, "Position embeddings", e, link=b.url("/vision/heads"))
    b.edge("image", pe.id)
    b.chain([pe.id, cls.id, pos.id])

    # 2. The blocks (pre-norm, so the forward order is not the order the modules are declared in).
    prev = e.id
    for l, block in enumerate(vit.layers):
        blk = b.module(block, "block", f"Block {l}", layer=l, new_row=True, shapes={"in": stream, "out": stream},
                       facts={"residual": "x + attn(norm(x)), then + mlp(norm(x))"}, link=b.url("/vision/rollout", step=l))
        n1 = b.module(block.layernorm_before, "norm", "LayerNorm before", blk, layer=l, shapes={"out": stream})
        attn = b.module(block.attention, "attention", "Self-attention", blk, layer=l,
                        shapes={"q, k, v": [H, N, dh], "pattern": [H, N, N], "out": stream},
                        facts={"heads": H, "d_head": dh}, link=b.url("/vision/attention", layer=l))
        n2 = b.module(block.layernorm_after, "norm", "LayerNorm after", blk, layer=l, shapes={"out": stream})
        mlp = b.module(block.mlp, "mlp", "MLP", blk, layer=l, shapes={"hidden": [N, cfg.intermediate_size], "out": stream},
                       facts={"d_mlp": cfg.intermediate_size, "activation": cfg.hidden_act})
        b.chain([n1.id, attn.id, n2.id, mlp.id])
        b.edge(prev, blk.id)
        prev = blk.id

    # 3. The final norm; the classifier reads CLS's row.
    ln = b.module(vit.layernorm, "norm", "Final LayerNorm", new_row=True, shapes={"out": stream})
    head = b.module(model.classifier, "head", "Classifier (reads CLS)", new_row=True,
                    shapes={"in": [D], "weight": list(model.classifier.weight.shape), "out": [C]}, facts={"classes": C},
                    link=b.url("/vision/prediction"))
    b.add(Node("classes", "output", "Class probabilities", shapes={"out": [C]}, link=b.url("/vision/prediction")), new_row=True)
    b.chain([prev, ln.id, head.id, "classes"])

    # 4. Capture points (capture/vision.py).
    for hook in vision_capture.hook_names(L):
        parts = hook.split(".")
        if hook == "hook_patch_embed":
            b.place(hook, pe.id)
        elif hook == "hook_pos_embed":
            b.place(hook, pos.id)
        elif hook == "hook_embed":
            b.place(hook, e.id)
        elif parts[2] == "attn":
            b.place(hook, b.paths[id(vit.layers[int(parts[1])].attention)])
        else:
            b.place(hook, b.paths[id(vit.layers[int(parts[1])])])
    config = {"layers": L, "heads": H, "d_model": D, "d_head": dh, "d_mlp": cfg.intermediate_size,
              "image": f"{ih} × {iw} px", "patch": f"{ph} × {pw} px", "patches": P, "classes": C}
    return b.graph(config, vision_capture.hook_names(L))


# ---------------------------------------------------------------------------------------------
# Stable Diffusion

# The arrays of capture.diffusion.Step (besides the per-layer attention maps) and the node that makes
# each: tests check this covers the dataclass, so a new array needs a home here.
STEP_ARRAYS = {
    "model_input": "unet.conv_in",  # x_t as the UNet reads it
    "noise_cond": "unet.conv_out",  # the UNet's output for the prompt's half of the batch ...
    "noise_uncond": "unet.conv_out",  # ... and for the negative prompt's
    "noise": "guidance",
    "latent": "scheduler",
    "x0": "scheduler",
    "preview": "preview",
    "preview_x0": "preview",
    "words": "unet",  # the mean of every cross-attention layer's maps
}


def diffusion_hooks(unet) -> list[str]:
    """Every capture point of a run: each attention layer's name (cross-attention recorded every step,
    self-attention on request) and the arrays of a Step."""
    return diffusion_capture.attention_layers(unet) + diffusion_capture.attention_layers(unet, cross=False) + list(STEP_ARRAYS)


def _last_linear(module: nn.Module) -> nn.Linear | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _spatial_transformer(b: Builder, t, parent: Node, side: int, cross: set[str], d_ctx: int, T: int) -> Node:
    """A Transformer2DModel: its blocks' self-attention, cross-attention and feed-forward, side × side tokens."""
    C = t.in_channels
    node = b.module(t, "transformer", "Spatial transformer", parent, new_row=True,
                    shapes={"in": [C, side, side], "tokens": [side * side, C], "out": [C, side, side]},
                    facts={"blocks": len(t.transformer_blocks)})
    q = side * side
    for tb in t.transformer_blocks:
        ids = []
        first = True
        for attr in ("attn1", "attn2"):
            a = getattr(tb, attr, None)
            if a is None:
                continue
            path = b.paths[id(a)]
            is_cross = path.removeprefix("unet.") in cross
            heads = a.heads
            dh = a.to_q.out_features // heads
            if is_cross:
                n = b.module(a, "cross_attention", "Cross-attention", node, new_row=first,
                             shapes={"Q from": [q, C], "K, V from": [T, d_ctx], "pattern": [heads, q, T]},
                             facts={"heads": heads, "d_head": dh, "K, V": "from the prompt"}, link=b.url("/diffusion/generate"))
            else:
                n = b.module(a, "self_attention", "Self-attention", node, new_row=first,
                             shapes={"q, k, v": [heads, q, dh], "pattern": [heads, q, q]},
                             facts={"heads": heads, "d_head": dh, "recorded": "on request"})
            first = False
            ids.append(n.id)
        ff = _last_linear(tb.ff)
        f = b.module(tb.ff, "mlp", "Feed-forward", node, shapes={"out": [q, C]},
                     facts={"d_ff": ff.in_features} if ff is not None else {})
        ids.append(f.id)
        b.chain(ids)
    return node


def _resnet(b: Builder, r, parent: Node, side: int, new_row: bool) -> Node:
    return b.module(r, "resblock", "ResBlock", parent, new_row=new_row,
                    shapes={"in": [r.conv1.in_channels, side, side], "out": [r.conv2.out_channels, side, side]},
                    facts={"adds": "the timestep embedding"} if getattr(r, "time_emb_proj", None) is not None else {})


def _resample(b: Builder, m, parent: Node, side: int, down: bool) -> tuple[Node, int]:
    conv = next((c for c in m.modules() if isinstance(c, nn.Conv2d)), None)
    cin = getattr(m, "channels", conv.in_channels if conv is not None else 0)
    cout = getattr(m, "out_channels", cin)
    new = side // 2 if down else side * 2
    n = b.module(m, "sample", "Downsample ×½" if down else "Upsample ×2", parent, new_row=True,
                 shapes={"in": [cin, side, side], "out": [cout, new, new]})
    return n, new


def _unet_block(b: Builder, block, label: str, parent: Node, side: int, cross: set[str], d_ctx: int, T: int,
                mid: bool = False) -> tuple[Node, int, list[str], list[str]]:
    """A down, mid or up block: its ResBlocks with their spatial transformers, then the resampler.
    Returns the node, the side after it, the ids whose outputs a down block keeps for the skips (each
    ResBlock, or its transformer where it has one, then the resampler: diffusers' res_samples) and
    its ResBlocks' ids (an up block's ResBlocks each read one of those)."""
    node = b.module(block, "block", label, parent)
    resnets = list(block.resnets)
    attentions = list(getattr(block, "attentions", None) or [])
    ids, kept, res_ids = [], [], []
    # A mid block runs resnet 0, then (attention i, resnet i + 1); the others (resnet i, attention i).
    order = [resnets[0]] + [m for pair in zip(attentions, resnets[1:]) for m in pair] if mid else \
        [m for i, r in enumerate(resnets) for m in ([r, attentions[i]] if i < len(attentions) else [r])]
    for m in order:
        if any(m is r for r in resnets):
            n = _resnet(b, m, node, side, new_row=True)
            res_ids.append(n.id)
            kept.append(n.id)
        else:
            n = _spatial_transformer(b, m, node, side, cross, d_ctx, T)
            kept[-1] = n.id
        ids.append(n.id)
    node.shapes = {"in": b.nodes[ids[0]].shapes["in"]}
    for m in getattr(block, "downsamplers", None) or []:
        n, side = _resample(b, m, node, side, down=True)
        ids.append(n.id)
        kept.append(n.id)
    for m in getattr(block, "upsamplers", None) or []:
        n, side = _resample(b, m, node, side, down=False)
        ids.append(n.id)
    node.shapes["out"] = b.nodes[ids[-1]].shapes["out"]
    b.chain(ids)
    return node, side, kept, res_ids


def _vae_half(b: Builder, half, kind: str, parent: Node, side: int, new_row: bool) -> Node:
    """The VAE's encoder or decoder: conv_in, its blocks (each a leaf: ResBlocks and a resampler), conv_out."""
    encoder = kind == "encoder"
    node = b.module(half, "component", "VAE encoder" if encoder else "VAE decoder", parent, new_row=new_row,
                    link=b.url("/diffusion/forward"))
    ids = [b.module(half.conv_in, "conv", "conv_in", node, shapes={"out": [half.conv_in.out_channels, side, side]}).id]

    def vae_block(m, label):
        nonlocal side
        resnets = list(m.resnets)
        attn = list(getattr(m, "attentions", None) or [])
        down, up = getattr(m, "downsamplers", None) or [], getattr(m, "upsamplers", None) or []
        new = side // 2 if down else side * 2 if up else side
        facts = {"ResBlocks": len(resnets)}
        if attn:
            facts["self-attention"] = len([a for a in attn if a is not None])
        if down or up:
            facts["resample"] = "×½" if down else "×2"
        n = b.module(m, "vae_block", label, node, shapes={"in": [resnets[0].conv1.in_channels, side, side],
                                                          "out": [resnets[-1].conv2.out_channels, new, new]}, facts=facts)
        side = new
        ids.append(n.id)

    blocks = [(m, f"Down block {i}") for i, m in enumerate(half.down_blocks)] if encoder else []
    blocks.append((half.mid_block, "Mid block"))
    if not encoder:
        blocks += [(m, f"Up block {i}") for i, m in enumerate(half.up_blocks)]
    for m, label in blocks:
        vae_block(m, label)
    for attr in ("conv_norm_out", "conv_out"):
        m = getattr(half, attr, None)
        if m is not None:
            kind_ = "norm" if isinstance(m, nn.GroupNorm) else "conv"
            shape = {"out": [m.out_channels, side, side]} if isinstance(m, nn.Conv2d) else {}
            ids.append(b.module(m, kind_, attr, node, shapes=shape).id)
    b.chain(ids)
    node.shapes = {"in": [half.conv_in.in_channels, *(b.nodes[ids[1]].shapes["in"][1:])],
                   "out": b.nodes[ids[-1]].shapes["out"]}
    return node


def diffusion_graph(dm) -> Graph:
    """Stable Diffusion 1.x: prompt -> tokenizer -> text encoder (K, V of every cross-attention);
    latent -> UNet (down blocks, mid, up blocks with skips) -> guidance -> scheduler (loop); VAE."""
    pipe = dm.pipe
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    T, d_ctx = tok.model_max_length, te.config.hidden_size
    s, S, lc = unet.config.sample_size, dm.image_size, unet.config.in_channels
    cross = set(diffusion_capture.attention_layers(unet))
    b = Builder("diffusion", dm.name, {"text_encoder": te, "unet": unet, "vae": vae})
    generate, forward = b.url("/diffusion/generate"), b.url("/diffusion/forward")

    # 1. The prompt: tokens, then the text encoder, whose output is every cross-attention's K and V.
    b.add(Node("prompt", "input", "Prompt", link=generate))
    b.add(Node("tokenizer", "op", "Tokenizer (CLIP BPE)", shapes={"out": [T]}, facts={"vocab": len(tok), "max tokens": T}))
    tc = te.config
    enc = b.module(te, "component", "Text encoder (CLIP)", new_row=True, shapes={"in": [T], "out": [T, d_ctx]},
                   facts={"layers": tc.num_hidden_layers, "heads": tc.num_attention_heads, "d_model": d_ctx}, link=generate)
    tt = getattr(te, "text_model", te)  # transformers < 5 wraps the layers in text_model
    ids = [b.module(tt.embeddings, "embed", "Token + position embedding", enc, shapes={"out": [T, d_ctx]},
                    facts={"vocab": tc.vocab_size, "positions": tc.max_position_embeddings}).id]
    for l, layer in enumerate(tt.encoder.layers):
        ids.append(b.module(layer, "block", f"Layer {l}", enc, layer=l, shapes={"out": [T, d_ctx]},
                            facts={"heads": tc.num_attention_heads, "d_head": d_ctx // tc.num_attention_heads,
                                   "d_mlp": tc.intermediate_size}).id)
    ids.append(b.module(tt.final_layer_norm, "norm", "Final LayerNorm", enc, shapes={"out": [T, d_ctx]}).id)
    b.chain(["prompt", "tokenizer", enc.id])
    b.chain(ids)

    # 2. The UNet, drawn as a U: down blocks on the left going down, mid at the bottom, up blocks right.
    b.add(Node("latent", "input", "Latent x_t (pure noise at the start)", shapes={"out": [lc, s, s]}), new_row=True)
    u = b.module(unet, "component", "UNet (predicts the noise)", new_row=True, shapes={"in": [lc, s, s], "out": [lc, s, s]},
                 facts={"channels": ", ".join(map(str, unet.config.block_out_channels)),
                        "cross-attention layers": len(cross)}, link=generate)
    conv_in = b.module(unet.conv_in, "conv", "conv_in", u, shapes={"out": [unet.conv_in.out_channels, s, s]})
    temb = b.module(unet.time_embedding, "embed", "Timestep embedding", u,
                    shapes={"out": [unet.time_embedding.linear_2.out_features]}, facts={"into": "every ResBlock"})
    norm_out = b.module(unet.conv_norm_out, "norm", "conv_norm_out", u) if unet.conv_norm_out is not None else None
    conv_out = b.module(unet.conv_out, "conv", "conv_out", u, shapes={"out": [unet.conv_out.out_channels, s, s]})
    n = len(unet.down_blocks)
    side = s
    downs, ups = [], []
    kept = [conv_in.id]  # what the down path keeps for the skips, in order (diffusers' down_block_res_samples)
    for i, block in enumerate(unet.down_blocks):
        node, side, out, _ = _unet_block(b, block, f"Down block {i}", u, side, cross, d_ctx, T)
        downs.append(node)
        kept += out
    mid = None
    if unet.mid_block is not None:
        mid, side, _, _ = _unet_block(b, unet.mid_block, "Mid block", u, side, cross, d_ctx, T, mid=True)
    for i, block in enumerate(unet.up_blocks):
        node, side, _, res_ids = _unet_block(b, block, f"Up block {i}", u, side, cross, d_ctx, T)
        ups.append(node)
        for r in res_ids:  # each up ResBlock concatenates the last kept output to its input
            b.edge(kept.pop(), r, "skip", "skip")
    # Lay the blocks out as a U (the builder put them in one row as they were made).
    u.rows = [[conv_in.id, temb.id] + ([norm_out.id] if norm_out else []) + [conv_out.id]]
    u.rows += [[downs[i].id, None, ups[n - 1 - i].id] for i in range(n)]
    if mid is not None:
        u.rows.append([None, mid.id, None])
    path = [conv_in.id] + [d.id for d in downs] + ([mid.id] if mid else []) + [x.id for x in ups]
    path += ([norm_out.id] if norm_out else []) + [conv_out.id]
    b.chain(path)
    for name in diffusion_capture.attention_layers(unet):
        b.edge(enc.id, f"unet.{name}", "context", "K, V")
    b.edge("latent", conv_in.id)

    # 3. Each step: guidance mixes the two noise predictions, the scheduler steps the latent.
    sc = pipe.scheduler.config
    guide = b.add(Node("guidance", "op", "Classifier-free guidance", shapes={"out": [lc, s, s]},
                       facts={"ε": "ε_uncond + g · (ε_cond − ε_uncond)"}, link=generate), new_row=True)
    sched = b.add(Node("scheduler", "scheduler", "Scheduler", shapes={"out": [lc, s, s]},
                       facts={"class": type(pipe.scheduler).__name__, "train timesteps": sc.num_train_timesteps, "beta schedule": sc.beta_schedule,
                              "predicts": sc.get("prediction_type", "epsilon")}, link=forward))
    prev = b.add(Node("preview", "op", "Fast preview (linear latent → RGB)", shapes={"out": [s, s, 3]}, link=generate))
    b.chain([conv_out.id, guide.id, sched.id])
    b.edge(sched.id, "latent", "loop", "next step")
    b.edge(sched.id, prev.id)

    # 4. The VAE: the decoder turns the last latent into the picture; the encoder makes latents of
    #    pictures (the forward-process page and training).
    v = b.module(vae, "component", "VAE (autoencoder)", new_row=True, shapes={"image": [3, S, S], "latent": [lc, s, s]},
                 facts={"scaling factor": round(float(vae.config.scaling_factor), 5)}, link=forward)
    e = _vae_half(b, vae.encoder, "encoder", v, S, new_row=True)
    ids = [e.id]
    if getattr(vae, "quant_conv", None) is not None:
        ids.append(b.module(vae.quant_conv, "conv", "quant_conv (mean, log σ²)", v,
                            shapes={"out": [vae.quant_conv.out_channels, s, s]}).id)
    b.chain(ids)
    ids = []
    if getattr(vae, "post_quant_conv", None) is not None:
        ids.append(b.module(vae.post_quant_conv, "conv", "post_quant_conv", v, new_row=True,
                            shapes={"out": [vae.post_quant_conv.out_channels, s, s]}).id)
    d = _vae_half(b, vae.decoder, "decoder", v, s, new_row=not ids)
    b.add(Node("image", "output", "Image", shapes={"out": [3, S, S]}, link=forward), new_row=True)
    b.chain([sched.id] + ids + [d.id, "image"])

    # 5. Capture points: each attention layer on its module, each Step array where it is made.
    for name in diffusion_hooks(unet)[: -len(STEP_ARRAYS)]:
        b.place(name, f"unet.{name}")
    for name, where in STEP_ARRAYS.items():
        b.place(name, where)
    config = {"image": f"{S} × {S} px", "latent": f"{lc} × {s} × {s}", "UNet channels": u.facts["channels"],
              "cross-attention layers": len(cross), "tokens": T, "text d_model": d_ctx}
    return b.graph(config, diffusion_hooks(unet))
