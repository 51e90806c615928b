"""PyTorch twin of `membench parity` (issue #23): train the eager-PyTorch model of
`pytorch_reference.py` from membench's initial weights on membench's batches and write its losses.

    python bench/pytorch_parity.py DIR/<family>

    python bench/pytorch_parity.py --init-stats DIR/<family> [DIR/<family> ...]

DIR/<family> holds what membench wrote: spec.json (family, resolved arch config, io, batch, time,
dtype, optimizer, steps, threads), init.safetensors (every parameter under its membench VarStore
name) and batches.safetensors (x, y, mask, the step first). This script builds the twin, loads the
weights through the family's mapping, takes the steps with torch.optim.Adam and the reference's
masked loss, and writes pytorch_losses.json.

Each family's mapping (`TWINS`) lists rules between membench parameters and twin parameters; a rule
maps a tuple of membench names to a tuple of twin names, with explicit functions both ways
(identity when membench already uses PyTorch's layout). `export(twin)` gives {membench name:
tensor}, `load(twin, tensors)` copies membench's tensors in; both fail unless every membench
parameter and every twin parameter is covered by exactly one rule. Adding a family: a builder
from the resolved arch config and a rule list, one `TWINS` entry (and one `SMALL` entry in
harness/src/run/parity.rs).

`--init-stats` (membench parity --init-stats): for each directory, build the twin with its own
initialisation (torch.manual_seed(spec["init_seed"]), nothing loaded from membench), export it under
membench's names through the same rules, and write init_stats.json: per membench parameter its
shape, size, mean, standard deviation, fourth central moment, min and max (float64), and whether
it is deterministic (a second build with seed init_seed + 1 gives the same tensor).

No safetensors package is needed: the format (8-byte little-endian header length, JSON header,
raw little-endian data) is read by `read_safetensors` below.
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_reference as ref  # noqa: E402

DTYPES = {"F64": torch.float64, "F32": torch.float32, "I64": torch.int64, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path):
    """{name: tensor} from a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        dtype = DTYPES[meta["dtype"]]
        flat = torch.frombuffer(bytearray(body[lo:hi]), dtype=dtype) if hi > lo else torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(meta["shape"]).clone()
    return out


# --- mappings -------------------------------------------------------------------------------------
def same(*xs):
    return xs


class Rule:
    """membench names ↔ twin names; to_twin(*membench tensors) and to_membench(*twin tensors)
    each return a tuple in the other side's order."""

    def __init__(self, membench, twin, to_twin=same, to_membench=same):
        self.membench = (membench,) if isinstance(membench, str) else tuple(membench)
        self.twin = (twin,) if isinstance(twin, str) else tuple(twin)
        self.to_twin, self.to_membench = to_twin, to_membench


def linear(m, t, bias=True):
    """An nn.Linear under both names (tch's Linear has PyTorch's [out, in] layout)."""
    return [Rule(f"{m}.weight", f"{t}.weight")] + ([Rule(f"{m}.bias", f"{t}.bias")] if bias else [])


norm = linear  # LayerNorm: weight and bias, same layout.


def network_rules(twin):
    """The embedding (token inputs) and read-out every family shares."""
    rules = linear("head", "head")
    if twin.embed is not None:
        rules.append(Rule("embed.weight", "embed.weight"))
    return rules


def check_coverage(rules, membench_names, twin_names, family):
    """Every membench and every twin parameter in exactly one rule; fails loudly otherwise."""
    problems = []
    for side, names, pick in (("membench", membench_names, lambda r: r.membench), ("twin", twin_names, lambda r: r.twin)):
        mapped = [n for r in rules for n in pick(r)]
        twice = sorted({n for n in mapped if mapped.count(n) > 1})
        missing = sorted(set(names) - set(mapped))
        unknown = sorted(set(mapped) - set(names))
        for what, ns in (("mapped twice", twice), ("not mapped", missing), ("mapped but absent", unknown)):
            if ns:
                problems.append(f"{side} parameters {what}: {', '.join(ns)}")
    if problems:
        raise SystemExit(f"{family}: parameter mapping is incomplete:\n  " + "\n  ".join(problems))


def export(twin, rules, family="?"):
    """{membench name: tensor} from the twin's parameters."""
    params = dict(twin.named_parameters())
    check_coverage(rules, [n for r in rules for n in r.membench], params, family)
    out = {}
    for r in rules:
        values = r.to_membench(*(params[n].detach() for n in r.twin))
        assert len(values) == len(r.membench), r.membench
        out.update(zip(r.membench, (v.clone() for v in values)))
    return out


def load(twin, rules, tensors, family="?"):
    """Copies membench's {name: tensor} into the twin (shapes must match exactly)."""
    params = dict(twin.named_parameters())
    check_coverage(rules, tensors, params, family)
    with torch.no_grad():
        for r in rules:
            values = r.to_twin(*(tensors[n] for n in r.membench))
            assert len(values) == len(r.twin), r.twin
            for name, v in zip(r.twin, values):
                p = params[name]
                if tuple(p.shape) != tuple(v.shape):
                    raise SystemExit(f"{family}: {name}: twin shape {tuple(p.shape)} but membench gives {tuple(v.shape)}")
                p.copy_(v)


# --- twins: builder from the resolved arch config, and the core's rules ----------------------------
def unsupported(family, arch, **want):
    """Fails loudly on a config key the twin does not implement."""
    bad = {k: arch.get(k) for k, v in want.items() if arch.get(k) != v}
    if bad:
        raise SystemExit(f"{family}: the twin supports only {want}, got {bad}")


def rnn(cell):
    def build(arch, d_in, t):
        unsupported(cell, arch, layers=1, dropout=0.0)
        return ref.Rnn(cell, d_in, arch["hidden_size"])

    def rules(arch, core):
        return [Rule(f"core.{w}_l0", f"core.rnn.{w}_l0") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    return arch_width("hidden_size"), build, rules


def arch_width(key):
    return lambda arch: arch[key]


def transformer_build(arch, d_in, t):
    unsupported("transformer", arch, mlp_ratio=4.0, dropout=0.0, pos_encoding="sinusoidal", window=None)
    return ref.Transformer(d_in, d=arch["d_model"], layers=arch["layers"], heads=arch["heads"], t=t)


def transformer_rules(arch, core):
    rules = linear("core.input", "core.input") + norm("core.ln_f", "core.ln_f")
    for l in range(arch["layers"]):
        for part in ("ln1", "qkv", "proj", "ln2", "fc1", "fc2"):
            rules += linear(f"core.blocks.{l}.{part}", f"core.blocks.{l}.{part}")
    return rules


def memn2n_build(arch, d_in, t):
    unsupported("memn2n", arch, tying="adjacent")
    return ref.MemN2N(d_in, d=arch["d_model"], hops=arch["hops"], memory=arch["memory_size"], t=t)


def memn2n_rules(arch, core):
    # membench: embed [d_in, (K+1)·d] = [B | A¹=... | C^K], temporal [K+1, memory_size, d]: the same.
    return [Rule("core.embed", "core.emb"), Rule("core.temporal", "core.temporal")]


def kv_memory_build(arch, d_in, t):
    unsupported("kv_memory", arch, key_source="current")
    return ref.KvMemory(d_in, d=arch["d_model"], hops=arch["hops"], memory=arch["memory_size"], t=t)


def kv_memory_rules(arch, core):
    return [Rule("core.embed", "core.embed")] + [
        r for j in range(arch["hops"]) for r in linear(f"core.r.{j}", f"core.hops.{j}", bias=False)
    ]


def linear_attention_build(arch, d_in, t):
    unsupported("linear_attention", arch, feature_map="elu1", conv_kernel=0)
    if d_in != arch["d_model"]:
        raise SystemExit("linear_attention: the twin has no input projection (d_in must equal d_model)")
    d, heads, f, c = arch["d_model"], arch["heads"], arch["feature_dim"], arch["chunk_size"]
    return ref.Stack(d, arch["layers"], arch["mlp_ratio"], lambda: ref.LinearAttention(d, heads, f, c))


def stack_rules(arch, core, mixer_rules, m="core", t="core"):
    """residual.rs's Stack under membench path m and twin path t: layer{l}.{norm_mix, mixer,
    norm_mlp, mlp_up, mlp_down}, final_norm."""
    rules = norm(f"{m}.final_norm", f"{t}.final")
    for l in range(arch["layers"]):
        rules += norm(f"{m}.layer{l}.norm_mix", f"{t}.norms.{l}")
        rules += mixer_rules(f"{m}.layer{l}.mixer", f"{t}.mixers.{l}")
        if arch["mlp_ratio"]:
            rules += norm(f"{m}.layer{l}.norm_mlp", f"{t}.mlps.{l}.0")
            rules += linear(f"{m}.layer{l}.mlp_up", f"{t}.mlps.{l}.1")
            rules += linear(f"{m}.layer{l}.mlp_down", f"{t}.mlps.{l}.3")
    return rules


def linear_attention_rules(arch, core):
    return stack_rules(arch, core, lambda m, t: [r for w in ("wq", "wk", "wv", "wo") for r in linear(f"{m}.{w}", f"{t}.{w}", bias=False)])


def same_width(family, arch, d_in):
    if d_in != arch["d_model"]:
        raise SystemExit(f"{family}: the twin has no input projection (d_in must equal d_model)")


def controller_rules(arch, core):
    """controller.rs keeps layer 0's input weights split by source (x part, read part); the twin's
    LSTMCell has them side by side in weight_ih = [W_x | W_r]."""
    d_x = core.cell.input_size - arch["read_heads"] * arch["slot_width"]
    return [
        Rule(
            ("core.controller.weight_ix_l0", "core.controller.weight_ir_l0"),
            "core.cell.weight_ih",
            lambda wx, wr: (torch.cat([wx, wr], 1),),
            lambda w: tuple(w.split([d_x, w.shape[1] - d_x], 1)),
        ),
        Rule("core.controller.weight_hh_l0", "core.cell.weight_hh"),
        Rule("core.controller.bias_ih_l0", "core.cell.bias_ih"),
        Rule("core.controller.bias_hh_l0", "core.cell.bias_hh"),
        Rule("core.interface_weight", "core.iface.weight"),
        Rule("core.interface_bias", "core.iface.bias"),
    ]


def ntm_build(arch, d_in, t):
    unsupported("ntm", arch, controller="lstm", controller_layers=1, write_heads=1)
    return ref.Ntm(d_in, arch["controller_size"], arch["memory_slots"], arch["slot_width"], arch["read_heads"], 1, arch["shift_range"], arch["clip"])


def ntm_rules(arch, core):
    return controller_rules(arch, core) + [Rule("core.read_init", "core.read_init"), Rule("core.weight_init_logits", "core.w_init")]


def dnc_build(arch, d_in, t):
    unsupported("dnc", arch, controller="lstm", controller_layers=1)
    return ref.Dnc(d_in, arch["controller_size"], arch["memory_slots"], arch["slot_width"], arch["read_heads"], arch["clip"])


def gla_build(arch, d_in, t):
    unsupported("gla", arch, conv_kernel=0, scan="chunked")
    same_width("gla", arch, d_in)
    d, heads, tau, c = arch["d_model"], arch["heads"], arch["gate_temperature"], arch["chunk_size"]
    return ref.Stack(d, arch["layers"], arch["mlp_ratio"], lambda: ref.Gla(d, heads, tau, c))


def gla_rules(arch, core):
    def mixer(m, t):
        return [r for w in ("wq", "wk", "wv", "wo") for r in linear(f"{m}.{w}", f"{t}.{w}", bias=False)] + linear(f"{m}.wa", f"{t}.wa") + linear(f"{m}.wr", f"{t}.wr")

    return stack_rules(arch, core, mixer)


def mamba_build(arch, d_in, t):
    same_width("mamba", arch, d_in)
    d, layers = arch["d_model"], arch["layers"]
    make = lambda: ref.Mamba(d, arch["state_dim"], arch["expand"], arch["conv_kernel"], arch["chunk_size"], layers, arch["dt_rank"], arch["scan"])
    return ref.Stack(d, layers, arch["mlp_ratio"], make)


def mamba_rules(arch, core):
    def mixer(m, t):
        return (
            [r for w in ("in_proj", "x_proj", "out_proj") for r in linear(f"{m}.{w}", f"{t}.{w}", bias=False)]
            + linear(f"{m}.dt_proj", f"{t}.dt_proj")
            + [Rule(f"{m}.conv_w", f"{t}.conv.weight"), Rule(f"{m}.conv_b", f"{t}.conv.bias")]
            + [Rule(f"{m}.a_log", f"{t}.a_log"), Rule(f"{m}.d_skip", f"{t}.d_skip")]
        )

    return stack_rules(arch, core, mixer)


def rmt_build(arch, d_in, t):
    same_width("rmt", arch, d_in)
    return ref.Rmt(arch["d_model"], arch["layers"], arch["heads"], arch["segment_len"], arch["memory_tokens"], arch["mlp_ratio"])


def rmt_rules(arch, core):
    mixer = lambda m, t: linear(f"{m}.qkv", f"{t}.qkv") + linear(f"{m}.out", f"{t}.out")
    return [Rule("core.memory_init", "core.memory_init"), Rule("core.positions", "core.positions")] + stack_rules(
        arch, core, mixer, "core.transformer", "core.stack"
    )


d_model = arch_width("d_model")
controller = arch_width("controller_size")
# family: (token-embedding width from the arch config, builder(arch, d_in, time) → core, rules(arch, core))
TWINS = {
    "lstm": rnn("lstm"),
    "gru": rnn("gru"),
    "transformer": (d_model, transformer_build, transformer_rules),
    "memn2n": (d_model, memn2n_build, memn2n_rules),
    "kv_memory": (d_model, kv_memory_build, kv_memory_rules),
    "linear_attention": (d_model, linear_attention_build, linear_attention_rules),
    "ntm": (controller, ntm_build, ntm_rules),
    "dnc": (controller, dnc_build, controller_rules),
    "gla": (d_model, gla_build, gla_rules),
    "mamba": (d_model, mamba_build, mamba_rules),
    "rmt": (d_model, rmt_build, rmt_rules),
}


def build_twin(spec):
    """The twin Network of a spec.json, and its mapping rules."""
    family, arch = spec["family"], spec["arch"]
    if family not in TWINS:
        raise SystemExit(f"no PyTorch twin for {family}; known: {', '.join(TWINS)}")
    width, build, core_rules = TWINS[family]
    io = dict(input=tuple(spec["io"]["input"]), output=tuple(spec["io"]["output"]))
    twin = ref.Network(dict(io=io, embed=width(arch), core=lambda d_in: build(arch, d_in, spec["time"])))
    return twin, network_rules(twin) + core_rules(arch, twin.core)


def tensor_stats(x):
    """Moments and bounds of one tensor, in float64 (population moments, as membench computes)."""
    x = x.detach().double().flatten()
    mean = x.mean()
    dev = x - mean
    return dict(n=x.numel(), mean=mean.item(), std=dev.pow(2).mean().sqrt().item(), m4=dev.pow(4).mean().item(), min=x.min().item(), max=x.max().item())


def init_stats(out_dir):
    with open(os.path.join(out_dir, "spec.json")) as f:
        spec = json.load(f)
    draws = []
    for seed in (spec["init_seed"], spec["init_seed"] + 1):  # a second draw tells deterministic inits
        torch.manual_seed(seed)
        twin, rules = build_twin(spec)
        draws.append(export(twin, rules, spec["family"]))
    stats = {name: dict(shape=list(t.shape), deterministic=torch.equal(t, draws[1][name]), **tensor_stats(t)) for name, t in draws[0].items()}
    with open(os.path.join(out_dir, "init_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)


def main():
    if sys.argv[1] == "--init-stats":
        for out_dir in sys.argv[2:]:
            init_stats(out_dir)
        return
    out_dir = sys.argv[1]
    with open(os.path.join(out_dir, "spec.json")) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    dtype = torch.float64 if spec["dtype"] == "f64" else torch.float32
    twin, rules = build_twin(spec)
    twin = twin.to(dtype)
    load(twin, rules, read_safetensors(os.path.join(out_dir, "init.safetensors")), spec["family"])
    data = read_safetensors(os.path.join(out_dir, "batches.safetensors"))
    o = spec["optimizer"]
    assert o["name"] == "adam", o
    opt = torch.optim.Adam(twin.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
    kind = spec["io"]["output"][0]
    losses = []
    for i in range(spec["steps"]):
        loss = ref.loss_fn(kind, twin(data["x"][i]), data["y"][i], data["mask"][i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with open(os.path.join(out_dir, "pytorch_losses.json"), "w") as f:
        json.dump({"losses": losses}, f)


if __name__ == "__main__":
    main()
