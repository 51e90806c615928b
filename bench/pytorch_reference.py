"""PyTorch eager reference for `membench bench --compare-pytorch`.

Builds the same model as membench for a reference spec (same shapes, dtype float32, same loss
with a mask, Adam), times one full training step the same way (median over --steps timed steps
after --warmup, each ending with loss.item()), and prints JSON. Straightforward implementations:
what a researcher would write in eager PyTorch, with heads batched and no per-slot Python loops.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BITS = dict(input=("dense", 9), output=("bits", 8))
TOKENS = dict(input=("tokens", 64), output=("classes", 64))
SPECS = {
    "lstm": dict(io=BITS, batch=32, time=40, hidden=128),
    "gru": dict(io=BITS, batch=32, time=40, hidden=128),
}


class Rnn(nn.Module):
    def __init__(self, cell, d_in, hidden):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(d_in, hidden, batch_first=True)
        self.width = hidden

    def forward(self, x):
        return self.rnn(x)[0]


class Network(nn.Module):
    """Embedding for token inputs -> core -> linear read-out, as membench's Network."""

    def __init__(self, io, core_fn, embed_width):
        super().__init__()
        kind, n = io["input"]
        self.embed = nn.Embedding(n, embed_width) if kind == "tokens" else None
        d_in = embed_width if self.embed is not None else n
        self.core = core_fn(d_in)
        self.head = nn.Linear(self.core.width, io["output"][1])

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        return self.head(self.core(x))


def build(name):
    s = SPECS[name]
    if name in ("lstm", "gru"):
        return Network(s["io"], lambda d: Rnn(name, d, s["hidden"]), s["hidden"]), s
    raise SystemExit(f"no reference for {name}")


def batch(s):
    g = torch.Generator().manual_seed(0)
    b, t = s["batch"], s["time"]
    kind, n = s["io"]["input"]
    x = torch.rand(b, t, n, generator=g).round() if kind == "dense" else torch.randint(n, (b, t), generator=g)
    okind, m = s["io"]["output"]
    y = torch.rand(b, t, m, generator=g).round() if okind == "bits" else torch.randint(m, (b, t), generator=g)
    return x, y, torch.ones(b, t)


def loss_fn(kind, out, y, mask):
    if kind == "bits":
        per = F.binary_cross_entropy_with_logits(out, y, reduction="none").sum(-1)
    else:
        per = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").view_as(mask)
    return (per * mask).sum() / mask.sum().clamp_min(1.0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, s = build(a.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y, mask = batch(s)
    kind = s["io"]["output"][0]
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = loss_fn(kind, model(x), y, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps(dict(model=a.model, threads=a.threads, step_ms_median=statistics.median(times))))


if __name__ == "__main__":
    main()
