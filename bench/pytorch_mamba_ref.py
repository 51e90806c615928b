"""PyTorch eager reference for architectures/src/mamba.rs: the same model (embedding 32 -> 128,
2 pre-norm residual Mamba blocks, final LayerNorm, 32-class head) and the same training step
(forward, cross-entropy, backward, Adam) at B 32, T 128, on the same number of threads.

Two scans, as in the Rust file: `sequential` (a Python loop over time, each step batched over
[B, E, N]: the straightforward way, like mamba_ssm's selective_scan_ref) and `chunked`
(cumulative log-decays within chunks of 16). Prints the median of 10 timed steps after 2 warm-up
steps for each, in milliseconds.

    python bench/pytorch_mamba_ref.py --threads 1
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FLOOR = 4.0  # per-step log-decay floor, as LOG_DECAY_FLOOR in mamba.rs


class Mamba(nn.Module):
    def __init__(self, d, n=16, expand=2, k=4, scan="chunked", chunk=16):
        super().__init__()
        e, r = expand * d, math.ceil(d / 16)
        self.e, self.n, self.r, self.k, self.scan, self.chunk = e, n, r, k, scan, chunk
        self.in_proj = nn.Linear(d, 2 * e, bias=False)
        self.conv = nn.Conv1d(e, e, k, groups=e, padding=k - 1)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e)
        with torch.no_grad():
            dt = torch.exp(torch.rand(e) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.a_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float)).repeat(e, 1))
        self.d_skip = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, d, bias=False)

    def forward(self, u):
        b, t, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x.transpose(1, 2))[..., :t].transpose(1, 2))
        proj = self.x_proj(x)
        dt = F.softplus(self.dt_proj(proj[..., : self.r]))
        bm, cm = proj[..., self.r : self.r + self.n], proj[..., self.r + self.n :]
        log_decay = (dt.unsqueeze(-1) * -torch.exp(self.a_log)).clamp_min(-FLOOR)  # [B,T,E,N]
        inp = (dt * x).unsqueeze(-1) * bm.unsqueeze(2)
        if self.scan == "sequential":
            # unbind rather than [:, i]: indexing's backward writes a full-size zero tensor per
            # step; mamba.rs does the same.
            h, ys = u.new_zeros(b, self.e, self.n), []
            for d_i, u_i, c_i in zip(log_decay.exp().unbind(1), inp.unbind(1), cm.unbind(1)):
                h = h * d_i + u_i
                ys.append((h @ c_i.unsqueeze(-1)).squeeze(-1))
            y = torch.stack(ys, 1)
        else:
            c = min(self.chunk, t)
            pad = (c - t % c) % c
            ld = F.pad(log_decay, (0, 0, 0, 0, 0, pad)).view(b, -1, c, self.e, self.n)
            # Cumulative sums within chunks as a GEMM with a triangular ones matrix, as mamba.rs.
            tri = torch.ones(c, c).tril()
            csum = lambda z: (tri @ z.reshape(-1, c, self.e * self.n)).view(b, -1, c, self.e, self.n)
            cum = csum(ld)
            acc = csum(F.pad(inp, (0, 0, 0, 0, 0, pad)).view(b, -1, c, self.e, self.n) * (-cum).exp())
            grow = cum.exp()
            local_end, decay_end = (grow * acc)[:, :, -1], grow[:, :, -1]
            h0, entering = u.new_zeros(b, self.e, self.n), []
            for d_i, l_i in zip(decay_end.unbind(1), local_end.unbind(1)):
                entering.append(h0)
                h0 = h0 * d_i + l_i
            h = grow * (torch.stack(entering, 1).unsqueeze(2) + acc)
            h = h.view(b, -1, self.e, self.n)[:, :t]
            y = (h @ cm.unsqueeze(-1)).squeeze(-1)
        return self.out_proj((y + x * self.d_skip) * F.silu(z))


class Net(nn.Module):
    def __init__(self, vocab, d, layers, scan):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.mixers = nn.ModuleList(Mamba(d, scan=scan) for _ in range(layers))
        self.final = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.embed(x)
        for norm, mixer in zip(self.norms, self.mixers):
            h = h + mixer(norm(h))
        return self.head(self.final(h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--time", type=int, default=128)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = 32
    x = torch.randint(vocab, (args.batch, args.time))
    y = torch.randint(vocab, (args.batch * args.time,))
    for scan in ["chunked", "sequential"]:
        net = Net(vocab, args.d_model, args.layers, scan)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        times = []
        for i in range(args.steps + 2):
            start = time.perf_counter()
            loss = F.cross_entropy(net(x).view(-1, vocab), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in net.parameters())
        print(f"pytorch mamba_{scan}: median {1e3 * statistics.median(times):.1f} ms "
              f"(min {1e3 * min(times):.1f}, max {1e3 * max(times):.1f}; {params} params, "
              f"torch {torch.__version__}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
