"""PyTorch eager reference for `membench bench --compare-pytorch` and the criterion benches.

The one Python reference of the project: for every reference spec of membench's bench table
(architectures/src/bench_specs.rs; same names, shapes, io, batch and length) it builds the same
model in eager PyTorch (float32, same op structure: embedding for token inputs → core → linear
read-out, masked loss, Adam), times one full training step the same way as membench (median over
--steps timed steps after --warmup untimed ones, each ending with loss.item()) and prints one JSON
line per model. The implementations are what a researcher would write in eager PyTorch: heads are
batched, nothing loops over memory slots in Python; recurrent memories (NTM, DNC) loop over time,
as their Rust twins do.

Two clocks: wall time per step (median), and CPU time over all timed steps divided by their number
(this thread's with one thread, the process's with more; a per-step CPU median would be biased with
2+ threads, as the kernel adds other threads' time in scheduler ticks coarser than a short step), so
that numbers from a shared, loaded machine can still be compared.

    python bench/pytorch_reference.py --model ntm --threads 1
    python bench/pytorch_reference.py --model all
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BITS = dict(input=("dense", 9), output=("bits", 8))
TOKENS = dict(input=("tokens", 64), output=("classes", 64))


# --- recurrent networks -------------------------------------------------------------------------
class Rnn(nn.Module):
    def __init__(self, cell, d_in, hidden, forget_bias=0.0):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(d_in, hidden, batch_first=True)
        self.width = hidden
        if forget_bias:  # rnn.rs: the forget gate's slice (gate order i, f, g, o) of bias_ih
            with torch.no_grad():
                self.rnn.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)

    def forward(self, x):
        return self.rnn(x)[0]


# --- Transformer (transformer.rs: pre-norm GPT block, fused qkv, SDPA causal) ---------------------
def normal_(linear, std):
    """GPT-2's init of a linear layer: weight N(0, std²), bias 0."""
    with torch.no_grad():
        linear.weight.normal_(0.0, std)
        linear.bias.zero_()
    return linear


class Block(nn.Module):
    def __init__(self, d, heads, hidden, layers=2):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        # GPT-2: N(0, 0.02), the two residual projections 0.02/√(2·layers) (transformer.rs).
        residual = 0.02 / math.sqrt(2 * layers)
        self.qkv, self.proj = normal_(nn.Linear(d, 3 * d), 0.02), normal_(nn.Linear(d, d), residual)
        self.fc1, self.fc2 = normal_(nn.Linear(d, hidden), 0.02), normal_(nn.Linear(hidden, d), residual)

    def forward(self, h):
        b, t, d = h.shape
        qkv = self.qkv(self.ln1(h)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        h = h + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class Transformer(nn.Module):
    def __init__(self, d_in, d=128, layers=2, heads=4, t=128):
        super().__init__()
        self.width = d
        self.input = nn.Linear(d_in, d)  # bias: nn.Linear's; weight N(0, 1/d_in) (transformer.rs)
        with torch.no_grad():
            self.input.weight.normal_(0.0, 1 / math.sqrt(d_in))
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d, layers) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        pos = torch.arange(t).unsqueeze(1) * torch.exp(torch.arange(0, d, 2) * (-math.log(1e4) / d))
        self.register_buffer("sinusoid", torch.stack([pos.sin(), pos.cos()], -1).reshape(t, d))

    def forward(self, x):
        h = self.input(x) + self.sinusoid
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)


# --- MemN2N (memn2n.rs: adjacent tying, temporal encoding, batched over queries) -----------------
class MemN2N(nn.Module):
    def __init__(self, d_in, d=64, hops=3, memory=50, t=50):
        super().__init__()
        self.d, self.hops, self.m, self.width = d, hops, min(memory, t), d
        # N(0, 0.1²/d_in) on dense inputs, the paper's N(0, 0.1) elsewhere (memn2n.rs).
        self.emb = nn.Parameter(torch.randn(d_in, (hops + 1) * d) * (0.1 / math.sqrt(d_in)))
        self.temporal = nn.Parameter(torch.randn(hops + 1, memory, d) * 0.1)
        idx = torch.arange(t)
        off = idx[:, None] - idx[None, :]
        self.register_buffer("outside", (off < 0) | (off >= self.m))
        self.register_buffer("off", off.clamp(0, self.m - 1))
        slot = idx[:, None] - torch.arange(self.m)[None, :]
        self.register_buffer("valid", (slot >= 0).float())
        self.register_buffer("slot", slot.clamp_min(0))

    def forward(self, x):
        b, t, _ = x.shape
        e = (x @ self.emb).view(b, t, self.hops + 1, self.d)
        u, m = e[:, :, 0], self.m
        off, slot = self.off.expand(b, t, t), self.slot.expand(b, t, m)
        for k in range(1, self.hops + 1):
            a, c = e[:, :, k - 1], e[:, :, k]
            ta, tc = self.temporal[k - 1, :m], self.temporal[k, :m]
            s = u @ a.transpose(1, 2) + (u @ ta.T).gather(2, off)
            p = s.masked_fill(self.outside, float("-inf")).softmax(-1)
            u = u + p @ c + (p.gather(2, slot) * self.valid) @ tc
        return u


# --- key-value memory (kv_memory.rs: one-head SDPA over a band of past slots, hops) --------------
class KvMemory(nn.Module):
    def __init__(self, d_in, d=128, hops=2, memory=50, t=128):
        super().__init__()
        self.d, self.width = d, d
        self.embed = nn.Parameter(torch.randn(d_in, 3 * d) * (0.1 / math.sqrt(d_in)))  # kv_memory.rs
        self.hops = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(hops))
        with torch.no_grad():
            for r in self.hops:
                r.weight.normal_(0.0, 0.1)
        off = torch.arange(t)[:, None] - torch.arange(t)[None, :]
        self.register_buffer("band", (off >= 0) & (off < memory))

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (x @ self.embed).view(b, t, 3, self.d).unsqueeze(1).unbind(3)
        for r in self.hops:
            q = r(q + F.scaled_dot_product_attention(q, k, v, attn_mask=self.band, scale=1.0))
        return q.squeeze(1)


# --- NTM (ntm.rs / addressing.rs: all heads at once, LSTM controller) ----------------------------
MEMORY_INIT, NORM_EPS = 1e-6, 1e-8  # ntm.rs, addressing.rs


def content(mem, keys, beta):
    """addressing.rs content_weights: softmax(β·k·M_i / ((|k| + ε)(|M_i| + ε))).
    mem [B, N, M], keys [B, H, M], beta [B, H, 1] → [B, H, N]"""
    scaled = keys * (beta / (keys.norm(dim=-1, keepdim=True) + NORM_EPS))
    return (scaled @ mem.transpose(1, 2) / (mem.norm(dim=-1).unsqueeze(1) + NORM_EPS)).softmax(-1)


class Ntm(nn.Module):
    def __init__(self, d_in, ctrl=100, n=128, m=20, reads=1, writes=1, shift=1, clip=20.0):
        super().__init__()
        self.n, self.m, self.reads, self.writes, self.shift, self.clip = n, m, reads, writes, shift, clip
        self.cell = nn.LSTMCell(d_in + reads * m, ctrl)
        self.addr = m + 3 + 2 * shift + 1
        self.iface = nn.Linear(ctrl, (reads + writes) * self.addr + writes * 2 * m)
        self.read_init = nn.Parameter(torch.zeros(reads * m))
        # Initial weightings softmax(logits), one-hot-like at slot 0: logit 10 there (ntm.rs).
        self.w_init = nn.Parameter(torch.zeros(reads + writes, n))
        with torch.no_grad():
            self.w_init[:, 0] = 10.0
        self.width = ctrl + reads * m

    def forward(self, x):
        b, t, _ = x.shape
        m, heads, hr, hw, s = self.m, self.reads + self.writes, self.reads, self.writes, 2 * self.shift + 1
        mem = x.new_full((b, self.n, m), MEMORY_INIT)
        reads = self.read_init.expand(b, -1)
        w = F.softmax(self.w_init, -1).expand(b, -1, -1)  # [B, H, N]
        h = c = x.new_zeros(b, self.cell.hidden_size)
        outs = []
        for step in range(t):
            h, c = self.cell(torch.cat([x[:, step], reads], 1), (h, c))
            p = self.iface(h).clamp(-self.clip, self.clip)
            addr, ea = p.split([heads * self.addr, hw * 2 * m], 1)
            key, beta, gamma, g, sh = addr.view(b, heads, self.addr).split([m, 1, 1, 1, s], 2)
            beta, gamma, g, sh = F.softplus(beta), 1 + F.softplus(gamma), torch.sigmoid(g), sh.softmax(-1)
            wg = g * content(mem, key, beta) + (1 - g) * w  # [B, H, N]
            rolled = torch.stack([torch.roll(wg, j - self.shift, dims=2) for j in range(s)], 2)  # [B, H, S, N]
            w = (sh.unsqueeze(2) @ rolled).squeeze(2)
            w = w.clamp_min(1e-12) ** gamma
            w = w / w.sum(-1, keepdim=True)
            r = w[:, :hr] @ mem  # [B, H_r, M]
            erase, add = ea.view(b, hw, 2 * m).split([m, m], 2)
            ww = w[:, hr:].transpose(1, 2)  # [B, N, H_w]
            mem = mem * (1 - ww @ torch.sigmoid(erase)) + ww @ torch.tanh(add)
            reads = r.reshape(b, hr * m)
            outs.append(torch.cat([h, reads], 1))
        return torch.stack(outs, 1)


# --- DNC (dnc.rs: content + dynamic allocation + temporal links, one write head) -----------------
class Dnc(nn.Module):
    def __init__(self, d_in, ctrl=100, n=128, w=20, reads=1, clip=20.0):
        super().__init__()
        self.n, self.w, self.r, self.clip = n, w, reads, clip
        self.cell = nn.LSTMCell(d_in + reads * w, ctrl)
        self.sizes = [reads * w, w, reads + 1, w, w, reads + 2, 3 * reads]
        self.iface = nn.Linear(ctrl, sum(self.sizes))
        self.width = ctrl + reads * w

    def forward(self, x):
        b, t, _ = x.shape
        n, w, r = self.n, self.w, self.r
        mem = x.new_full((b, n, w), MEMORY_INIT)
        usage, write_w, prec = x.new_zeros(b, n), x.new_zeros(b, n), x.new_zeros(b, n)
        read_w, link = x.new_zeros(b, r, n), x.new_zeros(b, n, n)
        off_diag = 1 - torch.eye(n, dtype=x.dtype)
        reads = x.new_zeros(b, r * w)
        h = c = x.new_zeros(b, self.cell.hidden_size)
        outs = []
        for step in range(t):
            h, c = self.cell(torch.cat([x[:, step], reads], 1), (h, c))
            rk, wk, st, erase, wv, gates, modes = self.iface(h).clamp(-self.clip, self.clip).split(self.sizes, 1)
            st, gates, modes = F.softplus(st) + 1, torch.sigmoid(gates), modes.view(b, r, 3).softmax(-1)
            retention = (1 - gates[:, :r].unsqueeze(-1) * read_w).prod(1)
            usage = (usage + write_w - usage * write_w) * retention
            u = usage * (1 - 1e-6) + 1e-6
            sorted_u, order = u.sort(dim=1, stable=True)
            excl = torch.cat([x.new_ones(b, 1), sorted_u[:, :-1]], 1).cumprod(1)
            alloc = torch.zeros_like(u).scatter(1, order, (1 - sorted_u) * excl)
            cw = content(mem, wk.view(b, 1, w), st[:, r:].unsqueeze(-1)).squeeze(1)
            ag, wg = gates[:, r : r + 1], gates[:, r + 1 :]
            write_w = wg * (ag * alloc + (1 - ag) * cw)
            ww = write_w.unsqueeze(2)
            mem = mem * (1 - ww * torch.sigmoid(erase).unsqueeze(1)) + ww * wv.unsqueeze(1)
            link = ((1 - ww - write_w.unsqueeze(1)) * link + ww * prec.unsqueeze(1)) * off_diag
            prec = (1 - write_w.sum(1, keepdim=True)) * prec + write_w
            fwd, bwd = read_w @ link.transpose(1, 2), read_w @ link
            cr = content(mem, rk.view(b, r, w), st[:, :r].unsqueeze(-1))
            read_w = (modes.unsqueeze(2) @ torch.stack([bwd, cr, fwd], 2)).squeeze(2)
            reads = (read_w @ mem).reshape(b, r * w)
            outs.append(torch.cat([h, reads], 1))
        return torch.stack(outs, 1)


# --- residual stack of linear_attention.rs / gla.rs / mamba.rs (residual.rs) ---------------------
class Stack(nn.Module):
    """h += mixer(LN(h)); h += MLP(LN(h)) when mlp_ratio > 0; final LN."""

    def __init__(self, d, layers, mlp_ratio, mixer):
        super().__init__()
        self.width = d
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.mixers = nn.ModuleList(mixer() for _ in range(layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d)) for _ in range(layers)
        ) if mlp_ratio else None
        self.final = nn.LayerNorm(d)

    def forward(self, h):
        for i, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            h = h + mixer(norm(h))
            if self.mlps is not None:
                h = h + self.mlps[i](h)
        return self.final(h)


def chunks(x, c):
    """[B, H, T, w] → [B, H, N, C, w], zero-padded at the end."""
    b, h, t, w = x.shape
    return F.pad(x, (0, 0, 0, (c - t % c) % c)).view(b, h, -1, c, w)


class LinearAttention(nn.Module):
    """elu+1 features, chunked causal form (linear_attention.rs forward_chunked)."""

    def __init__(self, d=128, heads=4, f=16, chunk=64):
        super().__init__()
        self.h, self.c = heads, chunk
        self.wq, self.wk = nn.Linear(d, heads * f, bias=False), nn.Linear(d, heads * f, bias=False)
        self.wv, self.wo = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.h, -1).transpose(1, 2)
        q, k, v = F.elu(split(self.wq(x))) + 1, F.elu(split(self.wk(x))) + 1, split(self.wv(x))
        c = min(self.c, t)
        q, k, v = chunks(q, c), chunks(k, c), chunks(v, c)
        scores = (q @ k.transpose(-1, -2)).masked_fill(~torch.ones(c, c, dtype=torch.bool).tril(), 0.0)
        kv = k.transpose(-1, -2) @ v
        ksum = k.sum(-2)
        num = scores @ v + q @ (kv.cumsum(2) - kv)
        den = scores.sum(-1) + (q @ (ksum.cumsum(2) - ksum).unsqueeze(-1)).squeeze(-1)
        o = (num / (den.unsqueeze(-1) + 1e-6)).view(b, self.h, -1, d // self.h)[:, :, :t]
        return self.wo(o.transpose(1, 2).reshape(b, t, d))


class Gla(nn.Module):
    """Gated linear attention, chunked form with pairwise log-decays (gla.rs forward_chunked)."""

    def __init__(self, d=128, heads=4, temperature=16.0, chunk=16):
        super().__init__()
        self.h, self.tau, self.c = heads, temperature, chunk
        self.wq, self.wk, self.wv = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.wa, self.wr, self.wo = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        dh = d // self.h
        split = lambda y: y.view(b, t, self.h, -1).transpose(1, 2)
        c = min(self.c, t)
        q, k, v = chunks(split(self.wq(x)) / math.sqrt(dh), c), chunks(split(self.wk(x)), c), chunks(split(self.wv(x)), c)
        cum = chunks(F.logsigmoid(split(self.wa(x))) / self.tau, c).cumsum(3)
        above = torch.ones(c, c, dtype=torch.bool).triu(1).view(c, c, 1)
        decay = (cum.unsqueeze(-2) - cum.unsqueeze(-3)).masked_fill(above, float("-inf")).exp()
        intra = (q.unsqueeze(-2) * k.unsqueeze(-3) * decay).sum(-1) @ v
        last = cum[:, :, :, -1:]
        added = (k * (last - cum).exp()).transpose(-1, -2) @ v
        chunk_decay = last.squeeze(3).exp().unsqueeze(-1)
        state, entering = x.new_zeros(b, self.h, dh, dh), []
        for i in range(cum.shape[2]):
            entering.append(state)
            state = state * chunk_decay[:, :, i] + added[:, :, i]
        o = intra + (q * cum.exp()) @ torch.stack(entering, 2)
        o = F.layer_norm(o.view(b, self.h, -1, dh)[:, :, :t], (dh,))
        return self.wo(o.transpose(1, 2).reshape(b, t, d) * F.silu(self.wr(x)))


class Mamba(nn.Module):
    """Selective SSM block (mamba.rs): the chunked scan with cumulative log-decays (what the timing
    runs), or `scan="recurrent"` (mamba.rs's default: one step at a time, the same function)."""

    def __init__(self, d=128, n=16, expand=2, k=4, chunk=16, layers=2, dt_rank=0, scan="chunked"):
        super().__init__()
        e, r = expand * d, dt_rank or math.ceil(d / 16)
        self.e, self.n, self.r, self.chunk, self.scan = e, n, r, chunk, scan
        self.in_proj = nn.Linear(d, 2 * e, bias=False)
        self.conv = nn.Conv1d(e, e, k, groups=e, padding=k - 1)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e)
        self.a_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float)).repeat(e, 1))
        self.d_skip = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, d, bias=False)
        # The reference mamba_simple.py: softplus(dt bias) log-uniform in [1e-3, 1e-1]; out_proj
        # divided by √layers (rescale_prenorm_residual).
        with torch.no_grad():
            dt0 = torch.exp(torch.rand(e) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_proj.bias.copy_(dt0 + torch.log(-torch.expm1(-dt0)))
            self.out_proj.weight /= math.sqrt(layers)

    def forward(self, u):
        b, t, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x.transpose(1, 2))[..., :t].transpose(1, 2))
        dt_in, bm, cm = self.x_proj(x).split([self.r, self.n, self.n], -1)
        dt = F.softplus(self.dt_proj(dt_in))
        log_decay = (dt.unsqueeze(-1) * -torch.exp(self.a_log)).clamp_min(-4.0)  # [B, T, E, N]
        inp = (dt * x).unsqueeze(-1) * bm.unsqueeze(2)
        if self.scan == "recurrent":
            h, ys = u.new_zeros(b, self.e, self.n), []
            for d_i, i_i, c_i in zip(log_decay.exp().unbind(1), inp.unbind(1), cm.unbind(1)):
                h = h * d_i + i_i
                ys.append((h @ c_i.unsqueeze(-1)).squeeze(-1))
            return self.out_proj((torch.stack(ys, 1) + x * self.d_skip) * F.silu(z))
        c = min(self.chunk, t)
        pad = (c - t % c) % c
        ld = F.pad(log_decay, (0, 0, 0, 0, 0, pad)).view(b, -1, c, self.e, self.n)
        # Cumulative sums within chunks as a GEMM with a triangular ones matrix, as mamba.rs.
        tri = u.new_ones(c, c).tril()
        csum = lambda z: (tri @ z.reshape(-1, c, self.e * self.n)).view(b, -1, c, self.e, self.n)
        cum = csum(ld)
        acc = csum(F.pad(inp, (0, 0, 0, 0, 0, pad)).view(b, -1, c, self.e, self.n) * (-cum).exp())
        grow = cum.exp()
        local_end, decay_end = (grow * acc)[:, :, -1], grow[:, :, -1]
        h0, entering = u.new_zeros(b, self.e, self.n), []
        for d_i, l_i in zip(decay_end.unbind(1), local_end.unbind(1)):
            entering.append(h0)
            h0 = h0 * d_i + l_i
        h = (grow * (torch.stack(entering, 1).unsqueeze(2) + acc)).view(b, -1, self.e, self.n)[:, :t]
        y = (h @ cm.unsqueeze(-1)).squeeze(-1)
        return self.out_proj((y + x * self.d_skip) * F.silu(z))


# --- specs: the same table as architectures/src/bench_specs.rs ------------------------------------
# --- Recurrent Memory Transformer (rmt.rs: [mem; segment; mem] through a causal stack) ----------
class CausalAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, h):
        b, t, d = h.shape
        qkv = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Rmt(nn.Module):
    """Segments of S steps; memory tokens read at the front, written at the end, carried on."""

    def __init__(self, d=128, layers=2, heads=4, segment=16, memory=4, mlp_ratio=4):
        super().__init__()
        self.width, self.s, self.m = d, segment, memory
        self.memory_init = nn.Parameter(torch.randn(memory, d) * 0.02)
        self.positions = nn.Parameter(torch.randn(2 * memory + segment, d) * 0.02)
        self.stack = Stack(d, layers, mlp_ratio, lambda: CausalAttention(d, heads))

    def forward(self, x):
        b, t, d = x.shape
        mem, outs = self.memory_init.expand(b, self.m, d), []
        for start in range(0, t, self.s):
            seg = x[:, start : start + self.s]
            s = seg.shape[1]
            h = self.stack(torch.cat([mem, seg, mem], 1) + self.positions[: 2 * self.m + s])
            outs.append(h[:, self.m : self.m + s])
            mem = h[:, self.m + s :]
        return torch.cat(outs, 1)


SPECS = {
    "lstm": dict(io=BITS, batch=32, time=40, embed=128, core=lambda d: Rnn("lstm", d, 128)),
    "gru": dict(io=BITS, batch=32, time=40, embed=128, core=lambda d: Rnn("gru", d, 128)),
    "transformer": dict(io=TOKENS, batch=32, time=128, embed=128, core=lambda d: Transformer(d)),
    "memn2n": dict(io=TOKENS, batch=32, time=50, embed=64, core=lambda d: MemN2N(d)),
    "kv_memory": dict(io=TOKENS, batch=32, time=128, embed=128, core=lambda d: KvMemory(d)),
    "ntm": dict(io=BITS, batch=16, time=20, embed=100, core=lambda d: Ntm(d)),
    "dnc": dict(io=BITS, batch=16, time=20, embed=100, core=lambda d: Dnc(d)),
    "linear_attention": dict(io=TOKENS, batch=32, time=128, embed=128, core=lambda d: Stack(128, 2, 4, LinearAttention)),
    "gla": dict(io=TOKENS, batch=32, time=128, embed=128, core=lambda d: Stack(128, 2, 4, Gla)),
    "mamba": dict(io=TOKENS, batch=32, time=128, embed=128, core=lambda d: Stack(128, 2, 0, lambda: Mamba(layers=2))),
    "rmt": dict(io=TOKENS, batch=32, time=128, embed=128, core=lambda d: Rmt()),
}
# membench's fused CPU scans (scan: fused) are timed against the same eager models: PyTorch has no
# fused scan.
SPECS["gla_fused"] = SPECS["gla"]
SPECS["mamba_fused"] = SPECS["mamba"]


class Network(nn.Module):
    """Embedding for token inputs -> core -> linear read-out, as membench's Network."""

    def __init__(self, spec):
        super().__init__()
        kind, n = spec["io"]["input"]
        self.embed = nn.Embedding(n, spec["embed"]) if kind == "tokens" else None
        self.core = spec["core"](spec["embed"] if self.embed is not None else n)
        self.head = nn.Linear(self.core.width, spec["io"]["output"][1])

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        return self.head(self.core(x))


def batch(s):
    g = torch.Generator().manual_seed(0)
    b, t = s["batch"], s["time"]
    kind, n = s["io"]["input"]
    x = torch.rand(b, t, n, generator=g).round() if kind == "dense" else torch.randint(n, (b, t), generator=g)
    okind, m = s["io"]["output"]
    y = torch.rand(b, t, m, generator=g).round() if okind == "bits" else torch.randint(m, (b, t), generator=g)
    return x, y, torch.ones(b, t)


def loss_fn(kind, out, y, mask):
    """Masked mean over positions, as harness/src/run/eval.rs `loss`."""
    if kind == "bits":
        per = F.binary_cross_entropy_with_logits(out, y, reduction="none").sum(-1)
    else:
        per = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").view_as(mask)
    return (per * mask).sum() / mask.sum().clamp_min(1.0)


def time_model(name, threads, warmup, steps):
    torch.manual_seed(0)
    s = SPECS[name]
    model = Network(s)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y, mask = batch(s)
    kind = s["io"]["output"][0]
    cpu_clock = time.thread_time if threads == 1 else time.process_time
    wall = []
    for i in range(warmup + steps):
        if i == warmup:
            c0 = cpu_clock()
        t0 = time.perf_counter()
        loss = loss_fn(kind, model(x), y, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        if i >= warmup:
            wall.append((time.perf_counter() - t0) * 1e3)
    cpu_ms = (cpu_clock() - c0) * 1e3 / steps
    params = sum(p.numel() for p in model.parameters())
    return dict(model=name, threads=threads, params=params, step_ms_median=statistics.median(wall), cpu_ms_mean=cpu_ms, torch=torch.__version__)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="a spec name, or `all`")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    names = list(SPECS) if a.model == "all" else [a.model]
    for name in names:
        if name not in SPECS:
            raise SystemExit(f"no reference for {name}; known: {', '.join(SPECS)}")
        print(json.dumps(time_model(name, a.threads, a.warmup, a.steps)), flush=True)


if __name__ == "__main__":
    main()
