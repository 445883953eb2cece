"""exp 4 at the decide profile's size under both protocols, with the transition-safe stopping rule (issue 32)."""
import dataclasses, sys, time
from prefixlab.experiments.claims import em, pct, protocol
from prefixlab.experiments.exp3 import configs_exp4
from prefixlab.sweep import run_sweep

out = sys.argv[1]
fair = dataclasses.replace(configs_exp4("decide")["exp4"], cache_dir=f"{out}/cache")
ref = dataclasses.replace(fair.reference_protocol(), tune_lr={"prefix": (5e-5,), "lora": (5e-3,)})
for name, config in (("exp4", fair), ("exp4-reference", ref)):
    t = time.perf_counter()
    recs = run_sweep(config, f"{out}/{name}", resume=False, progress=False)
    print(name, "prefix", pct(em(recs, method="prefix")), "lora", pct(em(recs, method="lora")), flush=True)
    for r in recs:
        if r["method"] != "none" and r.get("selected", True):
            print(" ", name, r["method"], r["seed"], r["lr"], r["exact_match"], r["steps_used"], r["stop_reason"],
                  r.get("loss_falling_at_stop"), flush=True)
    print(name, "protocol:", protocol(config, recs), flush=True)
    print(name, f"{time.perf_counter() - t:.0f} s", flush=True)
