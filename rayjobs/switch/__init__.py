"""The lightweight safety switch: a mapper from a fine-tuned model's residual stream at layer l to its base
model's, inserted at inference as a `MapReplace` intervention (switch on = base behaviour, off = fine-tuned).

    train_switch_pair(spec, examples, tok, out)     # pair.py: base (phase 1) + backdoored fine-tune (phase 2)
    scan_layers(ft, base, tok, prompts, switches)   # scan.py: trigger rate on/off per layer + baselines
    SwitchedModel(ft, tok, site, mapper_dir)        # serving.py: generation with a per-call on/off

Fitting reuses the extract stage and `rayjobs.mapping.fit.fit_mapper`; see rayjobs/jobs/switch_*.py.
"""
