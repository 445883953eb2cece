#!/usr/bin/env python
"""The reference's PyTorch pretraining step, timed on this machine, so scripts/bench.py's ratios can be taken
against a same-day figure instead of the one in the issue (machine speed drifts between days).

Re-typed from minGPT (karpathy/minGPT model.py + trainer.py, which the reference code forks): fused QKV with bias,
pre-LayerNorm blocks, tanh-GELU 4x MLP, dropout 0.1, untied head without bias, cross-entropy with ignore_index -1
on the input positions, AdamW (0.9, 0.95) with weight decay 0.1 on Linear weights, gradient clip 1.0, batch 64,
2 threads. Batches are synthetic tensors made before timing (the reference draws them in 4 DataLoader workers).

Needs PyTorch, which prefixlab does not depend on: `pip install torch` (or the CPU-only wheel from
https://download.pytorch.org/whl/cpu where that index is reachable).

  python scripts/bench_reference.py                      # paper-exp1 and paper-exp3, prints ms/step
  python scripts/bench_reference.py --models paper-exp1 --steps 300 --out runs/bench-reference.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

SIZES = {"paper-exp1": (1, 1, 96), "paper-exp3": (4, 4, 256)}  # layers, heads, d
VOCAB, SEQ, FIRST_TARGET, BATCH = 10, 19, 9, 64


def build(torch, n_layer, n_head, d):
    nn, F = torch.nn, torch.nn.functional

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.attn_dropout, self.resid_dropout = nn.Dropout(0.1), nn.Dropout(0.1)
            self.register_buffer("bias", torch.tril(torch.ones(SEQ, SEQ)).view(1, 1, SEQ, SEQ))

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(d, dim=2)
            q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = F.softmax(att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf")), dim=-1)
            y = (self.attn_dropout(att) @ v).transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class NewGELU(nn.Module):
        def forward(self, x):
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(d), SelfAttention(), nn.LayerNorm(d)
            self.c_fc, self.c_proj, self.act, self.dropout = nn.Linear(d, 4 * d), nn.Linear(4 * d, d), NewGELU(), nn.Dropout(0.1)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.dropout(self.c_proj(self.act(self.c_fc(self.ln_2(x)))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe, self.drop = nn.Embedding(VOCAB, d), nn.Embedding(SEQ, d), nn.Dropout(0.1)
            self.h = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f, self.lm_head = nn.LayerNorm(d), nn.Linear(d, VOCAB, bias=False)
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

        def logits(self, idx):
            x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.size(1)).unsqueeze(0)))
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

        def forward(self, idx, targets):
            logits = self.logits(idx).float()
            return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1), ignore_index=-1)

    model = GPT()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for p in model.parameters() if all(p is not q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-4, betas=(0.9, 0.95))
    return model, opt


def _autocast(torch, dtype):
    """bf16 autocast on the CPU (the reference's own code runs f32; this is the fair low-precision comparison)."""
    import contextlib

    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()


def ms_per_step(torch, name, steps, warmup=20, dtype="float32"):
    torch.manual_seed(0)
    model, opt = build(torch, *SIZES[name])
    model.train()
    x = torch.randint(0, 8, (steps + warmup, BATCH, SEQ))
    y = torch.randint(0, 8, (steps + warmup, BATCH, SEQ))
    y[:, :, :FIRST_TARGET] = -1

    def step(i):
        with _autocast(torch, dtype):
            loss = model(x[i], y[i])
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for i in range(warmup):
        step(i)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    return 1e3 * (time.perf_counter() - t) / steps


def eval_seconds(torch, name, samples, batch=800, dtype="float32"):
    """Greedy decoding of `samples` test inputs as minGPT's generate does it: no key/value cache, the whole
    sequence recomputed for every new token (FIRST_TARGET + 1 prompt tokens, SEQ - FIRST_TARGET new ones)."""
    torch.manual_seed(0)
    model, _ = build(torch, *SIZES[name])
    model.eval()
    prompts = torch.randint(0, 8, (samples, FIRST_TARGET + 1))
    t = time.perf_counter()
    with torch.no_grad(), _autocast(torch, dtype):
        for i in range(0, samples, batch):
            idx = prompts[i:i + batch]
            for _ in range(SEQ - FIRST_TARGET):
                idx = torch.cat([idx, model.logits(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="paper-exp1,paper-exp3", help="comma list of %s" % ", ".join(SIZES))
    p.add_argument("--steps", type=int, default=300, help="timed steps for paper-exp1; paper-exp3 times a fifth "
                   "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s, the 2-core machine)")
    p.add_argument("--dtypes", default="float32", help="comma list: float32 (the reference as published) and/or "
                   "bfloat16 (under torch.autocast on the CPU) (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=0, help="also time greedy decoding of this many samples on "
                   "paper-exp3 in float32, as minGPT's generate does it (default: %(default)s, skip)")
    p.add_argument("--out", help="also write the figures as JSON here")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.models.split(",")]
    if bad := [n for n in names if n not in SIZES]:
        p.error(f"unknown model {bad[0]!r}; valid: {', '.join(SIZES)}")
    if a.steps < 5:
        p.error("--steps must be at least 5")
    dtypes = [d.strip() for d in a.dtypes.split(",")]
    if bad := [d for d in dtypes if d not in ("float32", "bfloat16")]:
        p.error(f"unknown dtype {bad[0]!r}; valid: float32, bfloat16")
    try:
        import torch
    except ImportError:
        sys.exit("bench_reference.py: error: needs PyTorch (pip install torch); prefixlab itself does not use it")
    torch.set_num_threads(a.threads)
    res = {"torch": torch.__version__, "threads": a.threads, "batch": BATCH, "ms_per_step": {}, "eval_s": {}}
    for dtype in dtypes:
        tag = "" if dtype == "float32" else f"@{dtype}"  # float32 keys stay the plain model names
        for n in names:
            ms = ms_per_step(torch, n, a.steps if n == "paper-exp1" else max(5, a.steps // 5), dtype=dtype)
            res["ms_per_step"][n + tag] = ms
            print(f"reference PyTorch step {n} {dtype}: {ms:.2f} ms/step", flush=True)
        if a.eval_samples and dtype == "float32":  # the reference as published decodes in f32
            res["eval_s"][f"paper-exp3{tag}"] = s = eval_seconds(torch, "paper-exp3", a.eval_samples, dtype=dtype)
            print(f"reference greedy decoding of {a.eval_samples} samples on paper-exp3 {dtype}: {s:.1f} s", flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
