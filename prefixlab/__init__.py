"""prefixlab: what prompting, soft prompting, prefix-tuning, LoRA and full fine-tuning can do, on small transformers.

The Python API (the README's "Python API" section has a runnable example):
    prefixlab.sweep         SweepConfig, run_sweep(config, run_dir), load_config: pretrain, tune, evaluate, resume
    prefixlab.analysis      load_run(run_dir): bases and tuned runs back as models; attention measurements
    prefixlab.experiments   the papers' sections as sweep configs and claims; run_reproduction
    prefixlab.theory        the papers' constructions and identities as weights of the same transformer
    prefixlab.methods       the tuning methods (none, prompt, soft_prompt, prefix, prefix_kv, lora, full)
    prefixlab.tasks         the tasks as pure JAX batch generators
    prefixlab.model, config the transformer and its presets
"""
