"""Straightforward PyTorch eager NTM, the reference point of benches/ntm_step.rs.

Same function as architectures/src/ntm.rs (LSTMCell controller, one linear for all head
parameters, cosine content addressing, interpolation, circular shift, sharpening, erase/add), written
the way a PyTorch user would: per-head Python loop, torch.roll for the shift. Prints the median time
of one training step (forward, masked BCE, backward, Adam) on one thread.

    python architectures/benches/ntm_step_ref.py [--steps 30]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class NTM(nn.Module):
    def __init__(self, d_in, d_out, ctrl=100, n=128, m=20, reads=1, writes=1, shift=1, clip=20.0):
        super().__init__()
        self.n, self.m, self.reads, self.writes, self.shift, self.clip = n, m, reads, writes, shift, clip
        self.cell = nn.LSTMCell(d_in + reads * m, ctrl)
        self.addr = m + 3 + 2 * shift + 1
        heads = reads + writes
        self.iface = nn.Linear(ctrl, heads * self.addr + writes * 2 * m)
        self.read_init = nn.Parameter(torch.zeros(reads * m))
        logits = torch.zeros(heads, n)
        logits[:, 0] = 10.0
        self.w_init = nn.Parameter(logits)
        self.out = nn.Linear(ctrl + reads * m, d_out)

    def address(self, mem, k, beta, g, s, gamma, w_prev):
        cos = F.cosine_similarity(k.unsqueeze(1), mem, dim=-1, eps=1e-8)  # [B, N]
        wc = F.softmax(beta * cos, dim=-1)
        wg = g * wc + (1 - g) * w_prev
        r = self.shift
        shifted = sum(s[:, j : j + 1] * torch.roll(wg, j - r, dims=1) for j in range(2 * r + 1))
        w = shifted.clamp_min(1e-12) ** gamma
        return w / w.sum(-1, keepdim=True)

    def forward(self, x):
        b, t, _ = x.shape
        m, heads = self.m, self.reads + self.writes
        mem = torch.full((b, self.n, m), 1e-6)
        reads = self.read_init.expand(b, -1)
        ws = list(F.softmax(self.w_init, -1).unsqueeze(0).expand(b, -1, -1).unbind(1))
        h = c = torch.zeros(b, self.cell.hidden_size)
        outs = []
        for step in range(t):
            h, c = self.cell(torch.cat([x[:, step], reads], 1), (h, c))
            p = self.iface(h).clamp(-self.clip, self.clip)
            new_ws, read_vecs = [], []
            for i in range(heads):
                q = p[:, i * self.addr : (i + 1) * self.addr]
                k, beta, gamma, g, s = q[:, :m], q[:, m : m + 1], q[:, m + 1 : m + 2], q[:, m + 2 : m + 3], q[:, m + 3 :]
                new_ws.append(self.address(mem, k, F.softplus(beta), torch.sigmoid(g), F.softmax(s, -1), 1 + F.softplus(gamma), ws[i]))
            for i in range(self.reads):
                read_vecs.append(torch.bmm(new_ws[i].unsqueeze(1), mem).squeeze(1))
            base = heads * self.addr
            for j in range(self.writes):
                w = new_ws[self.reads + j]
                e = torch.sigmoid(p[:, base + 2 * m * j : base + 2 * m * j + m])
                a = torch.tanh(p[:, base + 2 * m * j + m : base + 2 * m * (j + 1)])
                mem = mem * (1 - w.unsqueeze(2) * e.unsqueeze(1)) + w.unsqueeze(2) * a.unsqueeze(1)
            ws = new_ws
            reads = torch.cat(read_vecs, 1)
            outs.append(self.out(torch.cat([h, reads], 1)))
        return torch.stack(outs, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = NTM(9, 8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randint(0, 2, (16, 20, 9)).float()
    y = torch.randint(0, 2, (16, 20, 8)).float()
    mask = torch.ones(16, 20)
    times, cpu_times = [], []
    for _ in range(args.steps + 3):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = net(x)
        loss = (F.binary_cross_entropy_with_logits(out, y, reduction="none").sum(-1) * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.thread_time() - c0)
    med, cpu = statistics.median(times[3:]), statistics.median(cpu_times[3:])
    print(f"pytorch eager ntm train step b16 t20 n128 m20 c100: median {med * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms thread cpu")


if __name__ == "__main__":
    main()
