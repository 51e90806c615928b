"""PyTorch eager reference for benches/step.rs: the same models, shapes and training step
(forward, cross-entropy, backward, Adam step) on the CPU with one thread. Prints one line per
model: `<id>: median <ms> ms over <n> steps`. Run by the Rust bench; also runnable by hand."""

import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 64


class Block(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, h):
        b, t, d = h.shape
        qkv = self.qkv(self.ln1(h)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        h = h + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class Transformer(nn.Module):
    def __init__(self, d=128, layers=2, heads=4, t=128):
        super().__init__()
        self.embed, self.input = nn.Embedding(VOCAB, d), nn.Linear(d, d)
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, VOCAB)
        pos = torch.arange(t).unsqueeze(1) * torch.exp(torch.arange(0, d, 2) * (-math.log(1e4) / d))
        self.register_buffer("sinusoid", torch.stack([pos.sin(), pos.cos()], -1).reshape(t, d))

    def forward(self, x):
        h = self.input(self.embed(x)) + self.sinusoid
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


class MemN2N(nn.Module):
    """Adjacent tying, temporal encoding, same batched formulation as memn2n.rs."""

    def __init__(self, d=64, hops=3, memory=50, t=50):
        super().__init__()
        self.d, self.hops, self.m = d, hops, min(memory, t)
        self.embed = nn.Embedding(VOCAB, d)
        self.emb = nn.Parameter(torch.randn(d, (hops + 1) * d) * 0.1)
        self.temporal = nn.Parameter(torch.randn(hops + 1, memory, d) * 0.1)
        self.head = nn.Linear(d, VOCAB)
        idx = torch.arange(t)
        off = idx[:, None] - idx[None, :]
        self.register_buffer("outside", (off < 0) | (off >= self.m))
        self.register_buffer("off", off.clamp(0, self.m - 1))
        slot = idx[:, None] - torch.arange(self.m)[None, :]
        self.register_buffer("valid", (slot >= 0).float())
        self.register_buffer("slot", slot.clamp_min(0))

    def forward(self, x):
        b, t = x.shape
        e = (self.embed(x) @ self.emb).view(b, t, self.hops + 1, self.d)
        u, m = e[:, :, 0], self.m
        off, slot = self.off.expand(b, t, t), self.slot.expand(b, t, m)
        for k in range(1, self.hops + 1):
            a, c = e[:, :, k - 1], e[:, :, k]
            ta, tc = self.temporal[k - 1, :m], self.temporal[k, :m]
            s = u @ a.transpose(1, 2) + (u @ ta.T).gather(2, off)
            p = s.masked_fill(self.outside, float("-inf")).softmax(-1)
            u = u + p @ c + (p.gather(2, slot) * self.valid) @ tc
        return self.head(u)


def bench(name, model, b, t, steps=10):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randint(VOCAB, (b, t)), torch.randint(VOCAB, (b * t,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x).view(b * t, VOCAB), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    print(f"{name}: median {1e3 * statistics.median(times):.1f} ms over {steps} steps (PyTorch {torch.__version__} eager)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    which = sys.argv[1:] or ["transformer", "memn2n"]
    if "transformer" in which:
        bench("pytorch transformer d128 L2 H4 T128 B32 train step", Transformer(), 32, 128)
    if "memn2n" in which:
        bench("pytorch memn2n d64 3 hops M50 T50 B32 train step", MemN2N(), 32, 50)
