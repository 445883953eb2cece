"""Where a training step's time goes, by op class, from the JAX/XLA profiler (scripts/bench.py --skip ... profile).

The step is the pretraining step that `benchmark.bench_pretrain` times (one run, batch 64, dropout on), compiled as
a `lax.scan` over steps as training compiles it. Every kernel the CPU runtime executes (an XLA fusion, a dot, a
copy) appears in the profiler's trace with its HLO name; the compiled module's text gives each name its ops, its
`op_name` (`transpose(jvp(...))` marks the backward pass) and the Python stack that made it. `classify` turns
those into the op classes of the table in docs/performance.md. A fusion holding ops of several classes counts
under the class of its first match in `classify`'s order (a matmul first).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import re
import tempfile
import time

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab import tasks as T
from prefixlab.config import preset
from prefixlab.run_layout import one_run_chunk
from prefixlab.train import OptimConfig, init_params, lm_loss, make_optimizer, run_keys

# Op classes by the functions on a kernel's Python stack (checked in this order after the matmuls).
_BY_FUNCTION = (
    ("dropout masks", ("keep_mask", "hash_bits", "_dropout")),
    ("data (task batches)", ("tasks.py",)),
    ("LayerNorm", ("LayerNorm",)),
    ("attention softmax and masking", ("attend", "softmax", "_allowed")),
    ("GELU", ("gelu", "config.py:<lambda>")),
    ("loss (cross-entropy)", ("target_scores", "_classification")),
    ("optimizer (AdamW, clipping)", ("optax", "apply_updates", "chunk.<locals>.body.<locals>.<lambda>")),
)
_LAYOUT_OPS = {"copy", "transpose", "bitcast", "concatenate", "slice", "dynamic-slice", "dynamic-update-slice",
               "pad", "parameter", "broadcast", "reshape", "tuple", "get-tuple-element", "convert"}


@dataclasses.dataclass(frozen=True)
class Kernel:
    op: str  # the entry instruction's opcode (fusion, dot, copy, ...)
    body_ops: tuple[str, ...]  # the opcodes inside a fusion
    op_name: str  # jax's op_name metadata
    stack: tuple[str, ...]  # "file.py:function", innermost first


def _hlo_kernels(hlo: str) -> dict[str, Kernel]:
    """Entry-computation instructions of a compiled module's text, by name."""
    tables = {"FileNames": {}, "FunctionNames": {}, "FileLocations": {}, "StackFrames": {}}
    comps, section, comp = {}, None, None
    lines = hlo.splitlines()
    for line in lines:
        s = line.strip()
        if s in tables:
            section = s
            continue
        if section and re.match(r"^\d+ ", s):
            i, rest = s.split(" ", 1)
            tables[section][int(i)] = (rest.strip('"') if section in ("FileNames", "FunctionNames")
                                       else {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest)})
            continue
        section = None
        head = re.match(r"^%?([\w.\-]+) .*\{$", line)
        if head and not line.startswith((" ", "ENTRY")):
            comp = comps.setdefault(head.group(1), [])
        elif line.startswith("ENTRY"):
            comp = comps.setdefault("ENTRY", [])
        elif comp is not None:
            comp.append(line)

    def stack(frame_id):
        out, seen = [], set()
        while frame_id in tables["StackFrames"] and frame_id not in seen:
            seen.add(frame_id)
            frame = tables["StackFrames"][frame_id]
            loc = tables["FileLocations"][frame["file_location_id"]]
            path = tables["FileNames"].get(loc["file_name_id"], "?")
            out.append(f"{path.rsplit('/', 1)[-1]}:{tables['FunctionNames'].get(loc['function_name_id'], '?')}"
                       + (" optax" if "/optax/" in path else ""))
            frame_id = frame["parent_frame_id"]
        return tuple(out)

    kernels = {}
    for body in comps.values():  # the entry computation and the scan's loop body
        for line in body:
            m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([\w\-]+)\(", line)
            if not m:
                continue
            calls = re.search(r"calls=%([\w.\-]+)", line)
            inner = comps.get(calls.group(1), []) if calls else []
            body_ops = tuple(re.findall(r"= .*? ([\w\-]+)\(", "\n".join(inner)))
            op_name = re.search(r'op_name="([^"]*)"', line)
            frame = re.search(r"stack_frame_id=(\d+)", line)
            kernels[m.group(1)] = Kernel(m.group(2), body_ops, op_name.group(1) if op_name else "",
                                         stack(int(frame.group(1))) if frame else ())
    return kernels


def classify(k: Kernel) -> str:
    """The op class of one kernel; backward kernels get ' (backward)'."""
    bwd = " (backward)" if "transpose(" in k.op_name else ""
    stack = " ".join(k.stack)
    ops = set(k.body_ops) | {k.op}
    if ops & {"dot", "convolution"} or any("matmul" in o for o in ops):
        return ("attention scores and values matmuls" if "attend" in stack else "matrix products") + bwd
    for name, needles in _BY_FUNCTION:
        if any(n in stack for n in needles):
            return name + ("" if name.startswith(("optimizer", "data")) else bwd)
    if ops <= _LAYOUT_OPS:
        return "copies, transposes, layout"
    return "other elementwise (residual adds, biases, embeddings)" + bwd


def pretrain_step_program(name: str, compute_dtype=None, batch: int = 64):
    """(jitted chunk, its args) for the pretraining step of preset `name`, as bench_pretrain runs it."""
    cfg = preset(name, compute_dtype=compute_dtype)
    mix = T.parse_mixture("sort_asc")
    graphdef, params_R = init_params(cfg, run_keys([0]))
    params = jax.tree.map(lambda x: x[0], params_R)
    optimizer = make_optimizer(OptimConfig())

    def loss_fn(p, _frozen, _run_data, key):
        k_data, k_drop = jax.random.split(key)
        return lm_loss(nnx.merge(graphdef, p), mix.batch(k_data, batch), None, k_drop)

    chunk = jax.jit(one_run_chunk(loss_fn, optimizer), donate_argnums=(0, 1))
    return chunk, (params, optimizer.init(params), None, None, jnp.float32(5e-4), jax.random.key(1))


def profile_step(name: str = "paper-exp3", compute_dtype=None, steps: int = 10) -> dict:
    """Runs `steps` steps under the profiler; returns {"ms_per_step", "rows": [{"op_class", "ms_per_step",
    "share" (of all kernels' time), "kernels_per_step"}], "kernel_ms_per_step", "outside_kernels_ms_per_step"}: the
    wall time no kernel accounts for (dispatch, the runtime's scheduling, gaps between kernels)."""
    chunk, (params, opt_state, *rest) = pretrain_step_program(name, compute_dtype)
    steps_U = jnp.arange(steps)
    kernels = _hlo_kernels(chunk.lower(params, opt_state, *rest, steps_U).compile().as_text())
    params, opt_state, losses = chunk(params, opt_state, *rest, steps_U)  # compile and warm up
    jax.block_until_ready(losses)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            t = time.perf_counter()
            params, opt_state, losses = chunk(params, opt_state, *rest, steps_U + steps)
            jax.block_until_ready(losses)
            wall = time.perf_counter() - t
        (path,) = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    by_class, count = collections.defaultdict(float), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in kernels:
            c = classify(kernels[e["name"]])
            by_class[c] += e.get("dur", 0) / 1e3 / steps
            count[c] += 1
    total, kernels = 1e3 * wall / steps, sum(by_class.values())
    rows = [{"op_class": c, "ms_per_step": ms, "share": ms / kernels, "kernels_per_step": count[c] / steps}
            for c, ms in sorted(by_class.items(), key=lambda kv: -kv[1])]
    # kernels can overlap on the runtime's threads: then their sum exceeds the wall time and nothing is left over
    return {"model": name, "compute_dtype": compute_dtype or "float32", "steps": steps, "ms_per_step": total,
            "kernel_ms_per_step": kernels, "outside_kernels_ms_per_step": max(0.0, total - kernels), "rows": rows}


def format_profile(p: dict) -> str:
    lines = [f"{p['model']} {p['compute_dtype']}: {p['ms_per_step']:.1f} ms/step under the profiler; kernels "
             f"{p['kernel_ms_per_step']:.1f} ms (summed over the runtime's threads), outside them "
             f"{p['outside_kernels_ms_per_step']:.1f} ms",
             f"  {'op class':58s} {'ms/step':>8s} {'share':>6s} {'kernels':>7s}"]
    lines += [f"  {r['op_class']:58s} {r['ms_per_step']:8.2f} {100 * r['share']:5.1f}% {r['kernels_per_step']:7.0f}"
              for r in p["rows"]]
    return "\n".join(lines)
